"""Persistence: SQLite in WAL mode, on a thread of its own (sqlthread.py), the system of record.

Two kinds of writes:
- durable now (`journal_order`, `update_order`, `set_engine_state`, ...): the buffered rows are written first so
  the order of records is kept, then the statement, then a commit, before the call returns;
- buffered (`add_event`, `add_gates`): appended to memory and written by the next `flush()` in one
  transaction, with the decisions, votes and gate_results rows derived from the `decision` events. The engine
  flushes after every bar in paper and live runs, and every few thousand bars in a backtest, so a crash can only
  lose the decisions of the bar in progress, never an order.

No pickle: structured context is stored as JSON text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Awaitable, Callable, Collection, Iterable, TypeVar

import orjson
import zstandard

from . import bookshapes, fmt, logs, reach, reserve, walcheck
from . import records as compact
from .chain import HEAD_KEY, ChainHead, line_hash
from .errors import (ControlError, DamagedDatabase, DamagedRecords, FfeError, NotADatabase, StorageError,
                     UsageError, damaged_database, first_problem, not_ffe_database, storage_failure,
                     cannot_read_database, closed_to_reader, unreadable_database)
from .events import Event
from .model import (APPROVAL_PENDING, APPROVAL_STATUSES, ClosedTrade, EngineState, Fill, Order, OrderReason,
                    OrderStatus, Position, Side, trail_disagrees)
from .sqlthread import Connection
from .sqlwriter import (MEMORY, SQL_DECISION, SQL_EVENT, SQL_GATE, SQL_VOTE, WriterError, WriterProcess,
                        index_rows, scalar)

log = logs.get_logger("ffe.store")

SCHEMA_VERSION = 6
PIN_TRIES = 5  # a backup's read view waits at most this many rounds for every buffered event to be written


class SchemaError(FfeError, RuntimeError):
    """The database was written by a newer ffe (its schema version is higher than this one knows)."""

    exit_code = 2


# kv: the seq after which the table events runs on by one, as migration 6 found it (events_gap_damage).
WHOLE_AFTER_KEY = "events_whole_after"
# kv: a paper account's own starting cash, stored at its first start; `venue.starting_cash` changed since applies to a
# fresh data directory only (overrides.starting_cash).
STARTING_CASH_KEY = "paper_starting_cash"
# The kv records only a paper account's books have (the simulated exchange's book, its own starting cash): books with
# neither are a live account's.
_PAPER_BOOKS = f"('paper_venue', '{STARTING_CASH_KEY}')"
# kv: "exchange", stored by the first start of an account on an exchange's market (which stores no market state with
# the books, as a market made in the process does in kv `market`): a paper account's books made there.
MARKET_SOURCE_KEY = "market_source"
# The reason of the HALTED a start stores, without its event, when the audit trail disagrees with the database.
TRAIL_DAMAGED_HALT = "records damaged: the audit trail disagrees with the database"

# The indexes of the decision index tables by decision id. A backtest with decision records builds them once, when
# its run is closed (`defer_decision_indexes`): built from the whole table their pages are full, where entries
# appended one flush at a time leave an eighth of each page empty.
DECISION_INDEXES = {
    "votes_decision": "CREATE INDEX votes_decision ON votes (decision_id)",
    "gate_results_decision": "CREATE INDEX gate_results_decision ON gate_results (decision_id)",
}

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ts REAL NOT NULL)""",
        """CREATE TABLE engine_state (
            id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, reason TEXT NOT NULL,
            by TEXT NOT NULL, updated_ts REAL NOT NULL)""",
        """CREATE TABLE decisions (
            decision_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, symbol TEXT NOT NULL, action TEXT NOT NULL,
            confidence REAL NOT NULL, tier INTEGER NOT NULL, strategy TEXT NOT NULL, price REAL NOT NULL,
            quantity REAL NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL, client_order_id TEXT,
            approval_id TEXT, event_seq INTEGER)""",
        """CREATE TABLE votes (
            decision_id TEXT NOT NULL, provider TEXT NOT NULL, action TEXT, confidence REAL, weight REAL,
            failed INTEGER NOT NULL, reason TEXT, latency_ms REAL)""",
        DECISION_INDEXES["votes_decision"],
        # value and limit_value have no declared type: numbers stay numbers, a state name stays text.
        """CREATE TABLE gate_results (
            decision_id TEXT, client_order_id TEXT, position INTEGER NOT NULL, code TEXT NOT NULL,
            value, limit_value, passed INTEGER NOT NULL, detail TEXT, ts REAL NOT NULL)""",
        DECISION_INDEXES["gate_results_decision"],
        """CREATE TABLE orders (
            client_order_id TEXT PRIMARY KEY, decision_id TEXT, venue TEXT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL, type TEXT NOT NULL, quantity REAL NOT NULL, price REAL, reduce_only INTEGER NOT NULL,
            reason TEXT NOT NULL, status TEXT NOT NULL, filled REAL NOT NULL, average REAL, fee REAL NOT NULL,
            exchange_id TEXT, created_ts INTEGER NOT NULL, updated_ts INTEGER NOT NULL, error TEXT NOT NULL,
            intent TEXT NOT NULL DEFAULT '{}', fee_base REAL NOT NULL DEFAULT 0)""",
        "CREATE INDEX orders_status ON orders (status)",
        """CREATE TABLE fills (
            id INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL, quantity REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, ts INTEGER NOT NULL,
            fee_base REAL NOT NULL DEFAULT 0)""",
        "CREATE INDEX fills_order ON fills (client_order_id)",
        """CREATE TABLE positions (
            symbol TEXT PRIMARY KEY, side TEXT NOT NULL, quantity REAL NOT NULL, entry_price REAL NOT NULL,
            opened_ts INTEGER NOT NULL, stop_loss REAL, take_profit REAL, entry_decision_id TEXT, fees REAL NOT NULL)""",
        """CREATE TABLE trades (
            id INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT NOT NULL, side TEXT NOT NULL, quantity REAL NOT NULL,
            entry_price REAL NOT NULL, exit_price REAL NOT NULL, pnl REAL NOT NULL, fees REAL NOT NULL,
            reason TEXT NOT NULL, opened_ts INTEGER NOT NULL, closed_ts INTEGER NOT NULL, entry_decision_id TEXT,
            exit_client_order_id TEXT)""",
        """CREATE TABLE provider_scores (
            trade_id INTEGER NOT NULL, provider TEXT NOT NULL, action TEXT NOT NULL, correct INTEGER NOT NULL,
            return_pct REAL NOT NULL)""",
        """CREATE TABLE approvals (
            approval_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
            quantity REAL NOT NULL, price REAL NOT NULL, created_ts REAL NOT NULL, expires_ts REAL NOT NULL,
            status TEXT NOT NULL, by TEXT, ended_ts REAL, intent TEXT NOT NULL, gates TEXT NOT NULL,
            client_order_id TEXT)""",
        # data: the event's audit record, UTF-8 JSON (stored as a BLOB, read with json.loads)
        """CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, event TEXT NOT NULL, data BLOB NOT NULL)""",
    ],
    2: [
        # The alerts' durable outbox: one row per alert and channel, delivered oldest first, kept after delivery
        # (status sent) as the record of what the operator was told.
        """CREATE TABLE alert_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
            severity TEXT NOT NULL, text TEXT NOT NULL, created_ts REAL NOT NULL, status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', sent_ts REAL)""",
        "CREATE INDEX alert_outbox_pending ON alert_outbox (channel, status, id)",
    ],
    3: [
        # What a fee counts for the coins it took (fee_base), each trade's at that trade's own price: the cash paid
        # is fee - fee_base_value. Rows written before it valued those coins at the fill's (the order's) price.
        "ALTER TABLE orders ADD COLUMN fee_base_value REAL NOT NULL DEFAULT 0",
        "UPDATE orders SET fee_base_value = fee_base * COALESCE(average, 0) WHERE fee_base != 0",
        "ALTER TABLE fills ADD COLUMN fee_base_value REAL NOT NULL DEFAULT 0",
        "UPDATE fills SET fee_base_value = fee_base * price WHERE fee_base != 0",
    ],
    4: [
        # When a dropped alert was told on its channel: the time the ALERTS_DROPPED notice that counted it was
        # delivered; NULL until then. What a channel has not been told is in the outbox, not in a process's memory,
        # so it survives any restart. Rows dropped before this version were told, if at all, by a count kept in
        # memory: nothing says so, and they are told once more rather than perhaps never.
        "ALTER TABLE alert_outbox ADD COLUMN told_ts REAL",
        "CREATE INDEX alert_outbox_untold ON alert_outbox (channel, id) WHERE status = 'dropped' AND told_ts IS NULL",
    ],
    5: [
        # The engine that raised the alert (host and data directory, as its text ends with): the window of a
        # start's alert goes on across a restart of the same engine only, not into an account restored or moved
        # elsewhere with its outbox. Rows from before this version name none, and hold no window (a start pages).
        "ALTER TABLE alert_outbox ADD COLUMN engine TEXT",
    ],
    6: [
        # The seq after which the events run on by one (WHOLE_AFTER_KEY): the last one there when this version came,
        # 0 for a new database. A start sets aside what the database never committed before it writes on, so from
        # here on a seq missing among the events was committed, then lost. Older versions went on after such
        # records, leaving gaps that are no loss.
        f"INSERT OR REPLACE INTO kv (key, value, updated_ts) SELECT '{WHOLE_AFTER_KEY}', COALESCE(MAX(seq), 0), "
        "CAST(strftime('%s', 'now') AS REAL) FROM events",
    ],
}

# Clock times: a decision's ts is its bar's open, the clock stood at that bar's close (ts + the timeframe, bound).
_SQL_MARKET_TIME = ("SELECT MAX(t) FROM (SELECT ts + ? AS t FROM (SELECT ts FROM decisions ORDER BY rowid DESC "
                    "LIMIT 1) UNION ALL SELECT MAX(created_ts) FROM orders UNION ALL SELECT MAX(updated_ts) "
                    "FROM orders UNION ALL SELECT MAX(ts) FROM fills UNION ALL SELECT MAX(closed_ts) FROM trades "
                    "UNION ALL SELECT MAX(opened_ts) FROM positions)")
# The latest stamp the engine's own clock left (orders, fills, trades, positions): never a candle's time, which on an
# exchange's market is the exchange's clock, not this machine's.
_SQL_STAMPED_TIME = ("SELECT MAX(t) FROM (SELECT MAX(created_ts) AS t FROM orders UNION ALL SELECT MAX(updated_ts) "
                     "FROM orders UNION ALL SELECT MAX(ts) FROM fills UNION ALL SELECT MAX(closed_ts) FROM trades "
                     "UNION ALL SELECT MAX(opened_ts) FROM positions)")
# Each symbol's own candles the records say were processed, as clock times (at their close): the stamps a candle of
# that symbol leaves. An order counts only when the engine made it on a candle (a strategy's entry or exit, a stop or
# take profit, asked for by nobody): an operator's order, an approval's or a cancel's stamp is the clock at any
# symbol's candle. The decisions' last row of the symbol is read apart (_SQL_LAST_DECIDED).
# A candle's fills (and the trades and positions they make) are no sign it was decided: the paper venue fills at its
# open, committed before its decision is written; handed out again, its fills are not made twice (the venue's book is
# stored with them) and it is decided. An order the engine made on it is: handed out again, it would fill at its open.
_SQL_CANDLE_STAMPS = ("SELECT symbol, MAX(created_ts) FROM orders WHERE reason = 'signal' "
                      "AND json_extract(intent, '$.by') IS NULL GROUP BY symbol")
# A symbol's bars are decided in time order, so its last row is its last bar: read back from the table's end, it is
# found at once for a symbol being decided (no index on decisions.symbol: the table is the largest, written every bar).
_SQL_LAST_DECIDED = "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid DESC LIMIT 1"
_SQL_ALERT = ("INSERT INTO alert_outbox (channel, key, kind, severity, text, created_ts, engine, status) "
              "VALUES (?,?,?,?,?,?,?,'pending')")
# A closed trade's period, from its close time (UTC): the profit view's daily, weekly and monthly tables. Weeks are
# ISO 8601's (Monday to Sunday, in the year of their Thursday); SQLite's strftime has %G and %V only from 3.46, so
# the week is numbered from its Thursday's day of the year.
_CLOSED = "closed_ts / 1000, 'unixepoch'"
_THURSDAY = f"date({_CLOSED}, '-3 days', 'weekday 4')"
PERIOD_KEYS = {
    "day": f"strftime('%Y-%m-%d', {_CLOSED})",
    "week": f"printf('%s-W%02d', strftime('%Y', {_THURSDAY}), (strftime('%j', {_THURSDAY}) - 1) / 7 + 1)",
    "month": f"strftime('%Y-%m', {_CLOSED})",
}
_ALERT_COLUMNS = ("id", "channel", "key", "kind", "severity", "text", "created_ts", "attempts")
WITHHELD = "withheld"  # the status of an alert a restore found pending in its backup: never delivered again


# ==================================================================== damaged records
# Records that pass SQLite's checks can still be other than what ffe wrote (edited by hand, a table dropped, a bad
# restore): read back, such a record is a damaged database, said in one line naming the table and the record.
_SQL_COLUMNS = ("SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
                "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'")
# AUTOINCREMENT's own table, which SQLite makes with ffe's first tables: a start reads the largest ids from it (the
# next trade's), so its columns are judged with ffe's.
SEQUENCE, SEQUENCE_COLUMNS = "sqlite_sequence", frozenset({"name", "seq"})
_SQL_SEQUENCE = f"SELECT '{SEQUENCE}', name FROM pragma_table_info('{SEQUENCE}')"
_EnumT = TypeVar("_EnumT", bound=Enum)


def schema_columns(conn: sqlite3.Connection) -> list[Any]:
    """The database's (table, column) pairs; a name damaged into bytes that are no UTF-8 read as such, so that the
    column it was is said missing (schema_damage) rather than the read failing."""
    before = conn.text_factory
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        return conn.execute(_SQL_COLUMNS).fetchall() + conn.execute(_SQL_SEQUENCE).fetchall()
    finally:
        conn.text_factory = before


@functools.lru_cache(maxsize=None)
def schema_of(version: int) -> dict[str, frozenset[str]]:
    """table -> its columns, as the migrations up to `version` make them."""
    conn = sqlite3.connect(":memory:")
    try:
        for v in range(1, min(version, SCHEMA_VERSION) + 1):
            for stmt in MIGRATIONS[v]:
                conn.execute(stmt)
        return _tables(conn.execute(_SQL_COLUMNS).fetchall())
    finally:
        conn.close()


def _tables(rows: Iterable[Any]) -> dict[str, frozenset[str]]:
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return {table: frozenset(columns) for table, columns in tables.items()}


def check_problems(rows: Iterable[Any]) -> list[str]:
    """SQLite's quick or integrity check: ['ok'], or the problems found, one each: an answer can hold many, a
    line each, under a `*** in database main ***` heading."""
    lines = [line.strip() for row in rows for line in str(row[0]).splitlines()]
    return [line for line in lines if line and not line.startswith("*** in database")] or ["ok"]


def schema_damage(version: int, rows: Iterable[Any]) -> str | None:
    """What the schema lacks of its version's (rows: the database's (table, column) pairs), or None."""
    have = _tables(rows)
    for table, columns in [*schema_of(version).items(), (SEQUENCE, SEQUENCE_COLUMNS)]:
        if table not in have:
            return f"table {table} is missing"
        missing = sorted(columns - have[table])
        if missing:
            return f"table {table} has no column {', '.join(missing)}"
    return None


def unreadable(where: str, column: str, raw: Any, expected: str) -> str:
    """What is damaged in a record: `where` names the table (and the row), `expected` what the column holds."""
    text = repr(raw)
    return f"{where}: {column} {text if len(text) <= 40 else text[:37] + '...'} is not {expected}"


# SQLite's storage class of a value as Python reads it back: what an events row's data was written as instead.
_STORAGE_CLASS = {str: "TEXT", int: "INTEGER", float: "REAL", type(None): "NULL"}


def event_line(path: object, seq: Any, data: Any) -> bytes:
    """An events row's data, the audit line ffe wrote as a BLOB. The same bytes stored as TEXT (a tool or an UPDATE
    by hand wrote them back), or any other value, are a damaged database, named with the row's seq."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise not_a_blob(path, seq, _STORAGE_CLASS.get(type(data), type(data).__name__))


def not_a_blob(path: object, seq: Any, kind: str) -> DamagedDatabase:
    """An events row whose data is stored as `kind` (TEXT, INTEGER, ...), not as the BLOB ffe writes."""
    return damaged_database(path, f"table events, seq {seq}: data is stored as {kind}, not as the BLOB ffe writes")


def _is_json(raw: Any) -> bool:
    try:
        json.loads(raw)
    except (TypeError, ValueError):
        return False
    return True


_KNOWN = {"an engine state": {s.value for s in EngineState}, "a side": {s.value for s in Side},
          "an order reason": {r.value for r in OrderReason}, "an order status": {s.value for s in OrderStatus},
          "an approval status": set(APPROVAL_STATUSES)}
# The statuses a start passes over: an order or approval that ended. Any other, known or not, it restores, so one
# it does not know stops it (its order may be at the venue, in flight), never passed over as if it had ended.
_ORDERS_ENDED = ", ".join(f"'{s.value}'" for s in OrderStatus if s.final)
_APPROVALS_ENDED = ", ".join(f"'{s}'" for s in APPROVAL_STATUSES if s != APPROVAL_PENDING)


def _state_damage(r: tuple[Any, ...]) -> str | None:
    if r[0] in _KNOWN["an engine state"]:
        return None
    return unreadable("table engine_state", "state", r[0], "an engine state")


# The books a start restores: each is a JSON object (read as an empty one, a start would lose them silently).
_BOOK_KEYS = frozenset({"portfolio", "market", "paper_venue", "weights"})


def _kv_damage(r: tuple[Any, ...]) -> str | None:
    try:
        value = json.loads(r[1])
    except (TypeError, ValueError):
        return unreadable(f"table kv, key {r[0]}", "value", r[1], "JSON")
    if r[0] in _BOOK_KEYS and not isinstance(value, dict):
        return unreadable(f"table kv, key {r[0]}", "value", r[1], "a JSON object")
    inside = bookshapes.damage(r[0], value)
    return f"table kv, key {r[0]}: {inside}" if inside else None


def _position_damage(r: tuple[Any, ...]) -> str | None:
    where = f"table positions, position {r[0]}"
    if r[1] not in _KNOWN["a side"]:
        return unreadable(where, "side", r[1], "a side")
    for column, raw in (("quantity", r[2]), ("entry_price", r[3])):
        if not (bookshapes.NUMBER.test(raw) and raw > 0):
            return unreadable(where, column, raw, "a number above 0")
    return None


def _order_damage(r: tuple[Any, ...]) -> str | None:
    where = f"table orders, order {r[0]}"
    for column, raw, expected in (("status", r[4], "an order status"), ("side", r[1], "a side"),
                                  ("reason", r[2], "an order reason")):
        if raw not in _KNOWN[expected]:
            return unreadable(where, column, raw, expected)
    quantity, filled = r[5], r[6]
    if not (bookshapes.NUMBER.test(quantity) and quantity > 0):
        return unreadable(where, "quantity", quantity, "a number above 0")
    if not (bookshapes.NUMBER.test(filled) and 0 <= filled <= quantity * (1 + 1e-9) + 1e-12):
        return unreadable(where, "filled", filled, f"a number from 0 to its quantity {quantity:g}")
    return _intent_damage(where, r[3])


def _approval_damage(r: tuple[Any, ...]) -> str | None:
    where = f"table approvals, approval {r[0]}"
    if r[3] not in _KNOWN["an approval status"]:
        return unreadable(where, "status", r[3], "an approval status")
    if not _is_json(r[2]):
        return unreadable(where, "gates", r[2], "JSON")
    return _intent_damage(where, r[1])


_INTENT_PRICES = ("price", "ref_price", "stop_loss", "take_profit", "confidence")


def _intent_damage(where: str, raw: Any) -> str | None:
    """An order's intent, as the engine writes it: what a start settles the order by. `{}` stands for an order whose
    own columns say it all (the engine then reads those)."""
    if not _is_json(raw):
        return unreadable(where, "intent", raw, "JSON")
    intent = json.loads(raw)
    if not isinstance(intent, dict):
        return unreadable(where, "intent", raw, "a JSON object")
    if not intent:
        return None
    symbol = intent.get("symbol")
    if not (isinstance(symbol, str) and symbol):
        return unreadable(where, "intent.symbol", symbol, "a symbol")
    for key, expected in (("side", "a side"), ("reason", "an order reason")):
        if intent.get(key) not in _KNOWN[expected]:
            return unreadable(where, f"intent.{key}", intent.get(key), expected)
    quantity: Any = intent.get("quantity")
    if not (bookshapes.NUMBER.test(quantity) and quantity > 0):
        return unreadable(where, "intent.quantity", quantity, "a number above 0")
    for key in _INTENT_PRICES:
        value = intent.get(key)
        if value is not None and not bookshapes.NUMBER.test(value):
            return unreadable(where, f"intent.{key}", value, "a number")
    by = intent.get("by")  # who asked for it; absent from the engine's own orders and from older records
    if by is not None and not isinstance(by, str):
        return unreadable(where, "intent.by", by, "a name")
    return None


def _no_state_damage(r: tuple[Any, ...]) -> str | None:
    # The state is stored before the first event: records without it lost it (HALTED, say), and a start would begin
    # afresh over them.
    if r[0] or not r[1]:
        return None
    return f"table engine_state holds no state, though the database holds {r[1]} event record(s)"


def _events_lost_damage(r: tuple[Any, ...]) -> str | None:
    # The chain's head is written in the transaction of the events it ends: events that end before it were
    # committed, then lost (rows deleted, an older copy of the table). A start would number its records after the
    # head, past a trail brought level with the rows left: a gap no verify passes.
    try:
        head = json.loads(r[0])["seq"] if r[0] is not None else None
    except (ValueError, TypeError, KeyError):
        return unreadable(f"table kv, key {HEAD_KEY}", "value", r[0], "the audit chain's head")
    last = r[1] or 0
    if not isinstance(head, int) or head <= last:
        return None
    return (f"table events ends at seq {last}, though the audit chain's head (kv {HEAD_KEY}), committed with "
            f"them, says seq {head}: committed records are missing")


# The events after WHOLE_AFTER_KEY's seq: the key's value, how many there are, the last, and (only when they are
# fewer than the seqs they span) the first seq missing among them.
_SQL_EVENTS_GAP = (
    f"WITH w(after) AS (SELECT CAST(value AS INTEGER) FROM kv WHERE key = '{WHOLE_AFTER_KEY}'), "
    "e(n, last) AS (SELECT COUNT(*), MAX(seq) FROM events, w WHERE seq > w.after) "
    "SELECT w.after, e.n, e.last, CASE WHEN e.n < e.last - w.after THEN (SELECT MIN(s) FROM ("
    "SELECT w.after + 1 AS s WHERE NOT EXISTS (SELECT 1 FROM events WHERE seq = w.after + 1) "
    "UNION ALL SELECT x.seq + 1 FROM events AS x WHERE x.seq > w.after "
    "AND NOT EXISTS (SELECT 1 FROM events AS y WHERE y.seq = x.seq + 1))) END FROM w, e")


# The schema version and WHOLE_AFTER_KEY's value: written by migration 6, the key is in every database of version 6
# on (or the check above would take a row deleted from among its events for an older ffe's gap).
_SQL_WHOLE_AFTER = f"SELECT (SELECT user_version FROM pragma_user_version), (SELECT value FROM kv WHERE key = " \
                   f"'{WHOLE_AFTER_KEY}'), (SELECT COALESCE(MAX(seq), 0) FROM events)"


def _whole_after_damage(r: tuple[Any, ...]) -> str | None:
    version, raw, last = r
    if raw is None:
        return (f"table kv has no key {WHOLE_AFTER_KEY}, though the database is of schema version {version}, which "
                "writes it: lost, and with it the check of the events" if version >= 6 else None)
    try:
        after = json.loads(raw)
    except (TypeError, ValueError):
        after = None
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        return unreadable(f"table kv, key {WHOLE_AFTER_KEY}", "value", raw, "a seq (a whole number, 0 or more)")
    if after > last:  # the last seq when version 6 came, and seqs only grow: one past the events' end is no record
        return (f"table kv, key {WHOLE_AFTER_KEY}: seq {after} is past the last event (seq {last}), which no ffe "
                "writes: edited, or the events after it lost")
    return None


def _events_gap_damage(r: tuple[Any, ...]) -> str | None:
    # Rows deleted from among the events (by hand, a bad merge of copies): the audit trail still holds them, and
    # the database that lacks them would be read as whole, its records as ever committed.
    after, count, last, missing = r
    if last is None or count >= last - after:
        return None
    return (f"table events lacks seq {missing}, though it holds seq {last} and its events run on by one after seq "
            f"{after}: a committed record was lost, deleted or an older copy of the table put back")


# The events run on by one after WHOLE_AFTER_KEY's seq, that key as migration 6 wrote it first: a start's, the
# doctor's and a backup's checks (record_checks), and `ffe audit verify`'s (Records.events_gap).
_EVENTS_RUN_ON: tuple[tuple[str, Callable[[tuple[Any, ...]], str | None]], ...] = (
    (_SQL_WHOLE_AFTER, _whole_after_damage), (_SQL_EVENTS_GAP, _events_gap_damage))


# Key-value records a start restores that are written before, or with, other records: missing while those are
# there, they were lost (deleted by hand, a bad restore), and a start would take their absence for a first start.
# key -> (table, the rows of it that show the record was written), the first table with such a row named.
_WRITTEN_BEFORE: dict[str, tuple[tuple[str, str], ...]] = {
    # The books: with every fill (its position, its closed trade). Fresh books would start the drawdown, the day's
    # loss and the day's entries over. (An order alone says nothing: one journaled before the first bar's books,
    # then a kill, leaves no books, and the next start is the account's first as far as they go.)
    "portfolio": (("fills", "1"), ("positions", "1"), ("trades", "1")),
    # The paper venue's book: with the state of each order it took (its exchange id). A fresh one would forget
    # its balances and open orders, and give its exchange ids again.
    "paper_venue": (("orders", "venue = 'paper' AND exchange_id IS NOT NULL"),),
    # The audit chain's head: with every chained record (one with its `prev`), in their transaction. Without it
    # nothing says where the trail must end: a trail cut short would verify, and a start would take what is left
    # of it for the whole.
    HEAD_KEY: (("events", "instr(CAST(data AS TEXT), '\"prev\":') > 0"),),
    # The learner's state: with the scores of the trade that moved it. Fresh weights forget what it learned.
    "weights": (("provider_scores", "1"),),
    # The venue's balances ffe did not put there, measured before the first reconciliation that compared says so.
    # Measured again, whatever moved in or out of the account meanwhile would be taken into it unseen.
    "reconcile_baseline": (("events", "event = 'reconcile' AND CASE WHEN json_valid(CAST(data AS TEXT)) THEN "
                                      "json_extract(CAST(data AS TEXT), '$.status') END IN "
                                      "('ok', 'resolved', 'differences', 'unconfirmed')"),),
    # A paper account's own starting cash (the simulated exchange's book there: a paper account): stored by every
    # start of an ffe of schema 6 before its run record. Missing after such a start's, a start would take the
    # configured figure for it and rebuild the books' cash from that. (An account made before ffe stored it has
    # no such run record until the start that stores it.)
    STARTING_CASH_KEY: (("events", f"event = 'run' AND seq > COALESCE((SELECT CAST(value AS INTEGER) FROM kv WHERE "
                                   f"key = '{WHOLE_AFTER_KEY}'), 0) AND CASE WHEN json_valid(CAST(data AS TEXT)) "
                                   "THEN json_extract(CAST(data AS TEXT), '$.phase') END = 'start' AND EXISTS "
                                   "(SELECT 1 FROM kv WHERE key = 'paper_venue')"),),
}


def _lost_record_check(key: str) -> tuple[str, Callable[[tuple[Any, ...]], str | None]]:
    tables = _WRITTEN_BEFORE[key]
    shown = ", ".join(f"EXISTS (SELECT 1 FROM {table} WHERE {rows})" for table, rows in tables)
    sql = f"SELECT EXISTS (SELECT 1 FROM kv WHERE key = '{key}'), {shown}"

    def judge(r: tuple[Any, ...]) -> str | None:
        if r[0]:
            return None
        found = [table for (table, _rows), there in zip(tables, r[1:]) if there]
        if not found:
            return None
        return (f"table kv has no key {key}, though table {found[0]} holds records written with it or after it: "
                "lost, not a first start")
    return sql, judge


# The approval mode the operator set (kv approval_mode) beside the last change of it recorded: an engine_state event,
# reason `approval mode auto|manual`, committed in the same transaction. The row lost, or put back to another mode,
# a start would take engine.approval (auto, say) for the operator's manual, and entries would go out unapproved.
# One row when a change is recorded: the kv value (NULL when missing), that event's seq and reason.
_SQL_APPROVAL_MODE = (
    "SELECT (SELECT value FROM kv WHERE key = 'approval_mode'), seq, reason FROM (SELECT seq, CASE WHEN "
    "json_valid(CAST(data AS TEXT)) THEN json_extract(CAST(data AS TEXT), '$.reason') END AS reason FROM events "
    "WHERE event = 'engine_state') WHERE reason IN ('approval mode auto', 'approval mode manual') "
    "ORDER BY seq DESC LIMIT 1")


def _approval_mode_damage(r: tuple[Any, ...]) -> str | None:
    raw, seq, reason = r
    change = f"table events, seq {seq}: {reason}"
    if raw is None:
        return (f"table kv has no key approval_mode, though the approval mode change committed with it is recorded "
                f"({change}): lost, not a first start (the start would take engine.approval for it)")
    mode = json.loads(raw) if _is_json(raw) else raw  # (a value that is no JSON: the key-value check names it)
    if f"approval mode {mode}" == reason:
        return None
    return (f"table kv holds approval_mode {mode}, though the last approval mode change, committed with it, says "
            f"otherwise ({change}): put back or edited, not what ffe wrote")


# The market made in the process (the simulated one, a replay: its kv market) is stored with the books, in every
# transaction that stores kv portfolio (each bar's, each fill's). Missing beside them, it was lost: a fresh market
# (the seed's path again, a replay from its files' first bar) would price the positions carried across on another
# path than they were opened on. Only the configuration says which market the account is on (an exchange's stores
# none), so it is checked for an account on such a market (`own_market`).
# Books made on an exchange's market: a live account's (no paper venue's book, no starting cash of its own), or an
# account's that says so (MARKET_SOURCE_KEY).
_MADE_ON_EXCHANGE = (f"(NOT EXISTS (SELECT 1 FROM kv WHERE key IN {_PAPER_BOOKS}) OR EXISTS (SELECT 1 FROM kv WHERE "
                     f"key = '{MARKET_SOURCE_KEY}'))")
_SQL_EXCHANGE_BOOKS = f"SELECT EXISTS (SELECT 1 FROM kv WHERE key = 'portfolio') AND {_MADE_ON_EXCHANGE}"
_SQL_MARKET_LOST = ("SELECT EXISTS (SELECT 1 FROM kv WHERE key = 'market'), "
                    f"EXISTS (SELECT 1 FROM kv WHERE key = 'portfolio'), {_MADE_ON_EXCHANGE}")


def _market_lost_damage(r: tuple[Any, ...]) -> str | None:
    # Books made on an exchange's market have no market state: a start on a market of the process's own refuses them
    # as another source's (check_books).
    if r[0] or not r[1] or r[2]:
        return None
    return ("table kv has no key market, though key portfolio, the books stored with it, is there: lost, not a first "
            "start (a new market would price the positions on another path), or the books were made on an "
            "exchange's market (market.source)")


def record_checks(every: bool, account: bool = True, own_market: bool = False
                  ) -> list[tuple[str, Callable[[tuple[Any, ...]], str | None]]]:
    """(query, judge of each row it returns: what is damaged, or None). What a start restores: the engine state,
    the key-value records (and those of them missing beside the records they were written with, and the approval
    mode unlike its last recorded change, in an `account`'s records: a backtest run stores no books; the market
    too when `own_market`, the account's market being made in the process), the open positions, the orders and
    approvals that have not ended (of any status but an ended one: one no ffe writes is damage); with `every`,
    every order and approval too."""
    live = "" if every else f" WHERE status NOT IN ({_ORDERS_ENDED})"
    pending = "" if every else f" WHERE status NOT IN ({_APPROVALS_ENDED})"
    checks = [("SELECT state FROM engine_state", _state_damage),
              ("SELECT (SELECT COUNT(*) FROM engine_state), (SELECT COUNT(*) FROM events)", _no_state_damage),
              (f"SELECT (SELECT value FROM kv WHERE key = '{HEAD_KEY}'), (SELECT MAX(seq) FROM events)",
               _events_lost_damage),
              *_EVENTS_RUN_ON,
              ("SELECT key, value FROM kv", _kv_damage),
              ("SELECT symbol, side, quantity, entry_price FROM positions", _position_damage),
              ("SELECT client_order_id, side, reason, intent, status, quantity, filled FROM orders" + live,
               _order_damage),
              ("SELECT approval_id, intent, gates, status FROM approvals" + pending, _approval_damage)]
    if every:  # market time that went back: nothing a start restores, so what `ffe doctor` and a backup check
        checks += [(_SQL_TRADE_BEFORE_OPEN, _trade_time_damage), (_SQL_BAR_BACK_IN_TIME, _bar_time_damage)]
    if account:
        checks += [_lost_record_check(key) for key in _WRITTEN_BEFORE] + [(_SQL_APPROVAL_MODE, _approval_mode_damage)]
        if own_market:
            checks.append((_SQL_MARKET_LOST, _market_lost_damage))
    return checks


def fills_damage(conn: sqlite3.Connection) -> str | None:
    """The first fill whose figures are not what ffe writes, or None: the books are rebuilt from them (a start sums
    them into the cash and the positions). A quantity and a price above 0; a fee, the coins a fee took (`fee_base`)
    and their value in cash (`fee_base_value`, a part of the fee; from schema 3 on) 0 or more."""
    valued = "fee_base_value" in {r[1] for r in conn.execute("PRAGMA table_info(fills)")}
    sql = f"SELECT id, side, quantity, price, fee, fee_base, {'fee_base_value' if valued else '0.0'} FROM fills"
    for fill_id, side, *figures in conn.execute(sql):
        where = f"table fills, fill {fill_id}"
        if side not in _KNOWN["a side"]:
            return unreadable(where, "side", side, "a side")
        for column, raw, above_zero in zip(("quantity", "price", "fee", "fee_base", "fee_base_value"), figures,
                                           (True, True, False, False, False)):
            if not bookshapes.NUMBER.test(raw) or raw < 0 or (above_zero and raw == 0):
                return unreadable(where, column, raw, "a number above 0" if above_zero else "a number from 0 up")
        fee, value = figures[2], figures[4]
        if value > fee + 1e-9 * fee + 1e-12:
            return f"{where}: fee_base_value {value!r} is more than its fee {fee!r}, of which it is a part"
    return None


_SQL_FILL_WITHOUT_ORDER = ("SELECT f.id, f.client_order_id FROM fills AS f LEFT JOIN orders AS o "
                           "ON o.client_order_id = f.client_order_id WHERE o.client_order_id IS NULL LIMIT 1")
# An order's filled quantity is the sum of its fills (written in one transaction), to the float rounding of a sum.
_SQL_FILLED_NOT_ITS_FILLS = ("SELECT client_order_id, filled, got FROM (SELECT o.client_order_id, o.filled, "
                             "COALESCE(SUM(f.quantity), 0.0) AS got FROM orders AS o LEFT JOIN fills AS f "
                             "ON f.client_order_id = o.client_order_id GROUP BY o.client_order_id) "
                             "WHERE ABS(filled - got) > 1e-12 + 1e-9 * MAX(ABS(filled), ABS(got)) LIMIT 1")


# An order's average and fee are what its fills make them: each fill's price is taken so that the fills cost what
# the venue's average says the order did (OrderPath._apply), and its fee is what the venue's grew by. Allowed: the
# rounding a quantity's twelve decimals leave in a sum of fills (a fill of 1e-5 coins is then 1e-7 of its cost).
_SQL_FILLS_NOT_ITS_FIGURES = (
    "SELECT client_order_id, filled, average, cost, fee, fees FROM (SELECT o.client_order_id, o.filled, o.average, "
    "o.fee, SUM(f.quantity * f.price) AS cost, SUM(f.fee) AS fees FROM orders AS o JOIN fills AS f "
    "ON f.client_order_id = o.client_order_id GROUP BY o.client_order_id) "
    "WHERE (average IS NOT NULL AND ABS(cost - filled * average) > 1e-9 + 1e-6 * ABS(filled * average)) "
    "OR ABS(fees - fee) > 1e-9 + 1e-6 * MAX(ABS(fee), ABS(fees)) LIMIT 1")


def _fills_not_its_figures(r: tuple[Any, ...]) -> str:
    cid, filled, average, cost, fee, fees = r
    if average is not None and abs(cost - filled * average) > 1e-9 + 1e-6 * abs(filled * average):
        return (f"table orders, order {cid}: filled {filled:.10g} at an average of {average:.10g} (a cost of "
                f"{filled * average:.10g}), its fills cost {cost:.10g}")
    return f"table orders, order {cid}: a fee of {fee:.10g}, its fills' fees add up to {fees:.10g}"


def _fill_without_order(r: tuple[Any, ...]) -> str:
    return f"table fills, fill {r[0]}: of order {r[1]}, which table orders does not hold"


def _filled_not_its_fills(r: tuple[Any, ...]) -> str:
    return f"table orders, order {r[0]}: filled {r[1]:.10g}, its fills add up to {r[2]:.10g}"


_CONTRADICTIONS = [(_SQL_FILL_WITHOUT_ORDER, _fill_without_order), (_SQL_FILLED_NOT_ITS_FILLS, _filled_not_its_fills),
                   (_SQL_FILLS_NOT_ITS_FIGURES, _fills_not_its_figures)]


def contradictions(conn: sqlite3.Connection) -> str | None:
    """Rows that contradict each other (edited by hand, a bad merge), or None: a start rebuilds the books from the
    fills, and would hold money or coins that never were. After fills_damage, which checks the fills' figures are
    what ffe writes. (`ffe doctor` checks the fills with their events itself, saying more of what differs.)"""
    for sql, judge in _CONTRADICTIONS:
        for row in conn.execute(sql):
            return judge(tuple(row))
    return None


_UNFINISHED = ", ".join(f"'{s.value}'" for s in OrderStatus if not s.final)
_FINAL = ", ".join(f"'{s.value}'" for s in OrderStatus if s.final)
_SQL_UNFINISHED_ORDER = f"SELECT 1 FROM orders WHERE status IN ({_UNFINISHED}) LIMIT 1"
# The final statuses the `order` events give the orders the journal has unfinished, in seq order: one pass over the
# order events (the events table can be long), each record read as JSON by SQLite.
_SQL_ENDED_IN_EVENTS = (
    "SELECT e.cid, o.status, e.status FROM (SELECT seq, json_extract(t, '$.client_order_id') AS cid, "
    "json_extract(t, '$.status') AS status FROM (SELECT seq, CAST(data AS TEXT) AS t FROM events "
    "WHERE event = 'order') WHERE json_valid(t)) AS e JOIN orders AS o ON o.client_order_id = e.cid "
    f"WHERE e.status IN ({_FINAL}) AND o.status IN ({_UNFINISHED}) ORDER BY e.seq")


def status_went_back(conn: sqlite3.Connection) -> str | None:
    """An order the journal has unfinished (new, in doubt, open) whose `order` events say it ended, or None. A final
    status never changes, and the journal is written with its order's events or before them: such an order's row
    was put back by hand. Taken as unfinished, a start would settle it at the venue again and record a second end,
    and the contradiction would be gone from the records. Said in `ffe doctor`'s words (model.trail_disagrees)."""
    if conn.execute(_SQL_UNFINISHED_ORDER).fetchone() is None:
        return None  # the usual case: nothing to read the events for
    ended: dict[str, tuple[str, str]] = {}
    for cid, journal, final in conn.execute(_SQL_ENDED_IN_EVENTS):
        ended[cid] = (journal, final)  # the last end the events say, as the doctor reads the trail
    for cid, (journal, final) in ended.items():
        if trail_disagrees(journal, final):
            return f"order {cid} is {journal} in the journal, {final} in the audit trail"
    return None


def replay_positions(fills: Iterable[tuple[str, str, float, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """The positions the fills (symbol, side, quantity, fee_base; in the order recorded) make, as the portfolio
    applies them (a fee taken in coins makes a position smaller; a sale never takes it below nothing), and the
    quantities each symbol's fills moved, summed: the scale of the rounding their sum may leave
    (position_differs)."""
    held: dict[str, float] = {}
    moved: dict[str, float] = {}
    for symbol, side, qty, fee_base in fills:
        q = held.get(symbol, 0.0)
        held[symbol] = q + qty - fee_base if side == "buy" else q - min(q, qty + fee_base)
        moved[symbol] = moved.get(symbol, 0.0) + abs(qty) + abs(fee_base)
    return held, moved


def positions_damage(conn: sqlite3.Connection) -> str | None:
    """A position that is not what the fills make it (replay_positions), or None. The fills' figures are checked
    first (fills_damage)."""
    held, moved = replay_positions(conn.execute("SELECT symbol, side, quantity, fee_base FROM fills ORDER BY id"))
    stored = {str(symbol): float(qty) for symbol, qty in conn.execute("SELECT symbol, quantity FROM positions")}
    for symbol in sorted(set(stored) | set(held)):
        a, b = stored.get(symbol, 0.0), held.get(symbol, 0.0)
        if position_differs(a, b, moved.get(symbol, 0.0)):
            return f"table positions, position {symbol}: {a:.10g}, its fills make it {b:.10g}"
    return None


def position_differs(stored: float, replayed: float, moved: float) -> bool:
    """Whether a position is other than its fills make it, beyond rounding: the books sum the same fills in
    another order of operations, which leaves a few units in the last place of the quantities they moved (`moved`,
    summed): a coin bought by the ten million leaves 1e-9 and more."""
    return abs(stored - replayed) > 1e-9 + 1e-9 * max(abs(stored), abs(replayed)) + 1e-12 * moved


_SQL_TRADE_BEFORE_OPEN = "SELECT id, symbol, opened_ts, closed_ts FROM trades WHERE closed_ts < opened_ts LIMIT 1"
# A symbol's bars are decided in time order: a bar before one decided earlier is market time that went back.
_SQL_BAR_BACK_IN_TIME = ("SELECT decision_id, symbol, ts, before FROM (SELECT decision_id, symbol, ts, MAX(ts) OVER "
                         "(PARTITION BY symbol ORDER BY rowid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS "
                         "before FROM decisions) WHERE ts < before LIMIT 1")


def _trade_time_damage(r: tuple[Any, ...]) -> str:
    closed, opened = fmt.iso_ms_apart(r[3], r[2])
    return (f"table trades, trade {r[0]} ({r[1]}): closed at {closed}, before it opened at {opened}: "
            "market time went back")


def _bar_time_damage(r: tuple[Any, ...]) -> str:
    bar, later = fmt.iso_ms_apart(r[2], r[3])
    return (f"table decisions, decision {r[0]} ({r[1]}): its bar {bar} was decided after the bar {later}: "
            "market time went back")


# SQLite's answers that mean the file cannot be written (as opposed to a wrong statement): the disk or directory
# refuses it, or another process keeps the database locked longer than busy_timeout.
_WRITE_FAILURES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_BUSY",
                   "SQLITE_LOCKED")


def _is_write_failure(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "").startswith(_WRITE_FAILURES)


_LOST = ("{path}: the database {found} but the audit trail holds records: the account's database was lost or "
         "replaced, or --data-dir (storage.path) names another directory than the account's; check it, restore "
         "the database, or move the audit trail away to start a new account")


def lost_database(path: Path | str, found: str) -> DamagedRecords:
    """A database that is missing, empty or holds no table (`found` says which) beside an audit trail with records:
    the account's was lost, never a first start."""
    return DamagedRecords(_LOST.format(path=path, found=found))


# What `ffe restore` (restore.py) names the files it moves aside and those it is putting in place.
RESTORE_ASIDE = ".before-restore-"  # <name>.before-restore-<time>
RESTORE_PARTIAL = ".restoring"  # <name>.restoring


def restore_left_half_way(db: Path, trail: Path) -> str | None:
    """No database (none, or an empty file), and the files of a restore that moved the records aside but did not put
    the backup's in place (killed, or the power cut): the records are in those files, and a first start would open a
    new account beside them. What the start (refused) and `ffe doctor` say of it; None when no such file is there, or
    when the database holds anything."""
    try:
        if db.stat().st_size > 0:
            return None
        none = "no database (an empty file)"
    except FileNotFoundError:
        none = "no database"
    except OSError:
        return None  # (a loop of links, a closed directory): the database's own checks say what it is
    found = sorted(p for folder, names in ((db.parent, (db.name, db.name + "-wal")), (trail.parent, (trail.name,)))
                   if folder.is_dir() for p in folder.iterdir()
                   if any(p.name.startswith(n + RESTORE_ASIDE) or p.name == n + RESTORE_PARTIAL for n in names))
    if not found:
        return None
    return (f"{db}: {none}, but a restore's files are there ({', '.join(str(p) for p in found[:4])}"
            f"{', ...' if len(found) > 4 else ''}): a restore was cut short, or the database was removed after one: "
            "run `ffe restore BACKUP --force` again, or put the files moved aside back under their names, or move "
            "them all elsewhere for a new account")


def wal_without_database(path: Path | str) -> str | None:
    """What is wrong with a database whose main file is missing or empty while its -wal file holds pages, or None.
    SQLite, opening such a database (read-only too), deletes the WAL as one left over from an empty database: it
    holds the newest records committed to it (a killed engine's, not yet checkpointed), the only copy left. So such
    a database is damaged, and is never opened."""
    path = Path(path)
    wal = path.with_name(path.name + "-wal")
    try:
        held = wal.stat().st_size
        main = path.stat().st_size if path.exists() else None
    except OSError:
        return None
    if held == 0 or main:
        return None
    found = "missing" if main is None else "empty (0 bytes)"
    return (f"the file is {found} while {wal.name} beside it holds {held} bytes, the newest records committed to it: "
            "keep it for a salvage")


def refuse_damaged_wal(path: Path | str) -> None:
    """DamagedDatabase for a WAL SQLite would not read whole beside the database at `path` (damaged_wal): for a
    reader where no engine writes it now, which would otherwise read the database without its newest commits."""
    problem = damaged_wal(path)
    if problem is not None:
        raise damaged_database(path, problem)


def damaged_wal(path: Path | str) -> str | None:
    """What is wrong with the WAL beside the database at `path` that SQLite would not read whole (walcheck), or
    None: the commits past the damage, the newest records, would be dropped without a word, and the WAL reset."""
    wal = Path(f"{path}-wal")
    damage = walcheck.damage(wal)
    if damage is None:
        return None
    return (f"{wal.name} beside it, the newest records committed to it, is damaged ({damage}): keep it for a "
            "salvage; moved aside, a start goes on without them if the database file holds the account's earlier "
            "records (the audit trail holds them: it sets them aside and says what was lost), else restore the last "
            "backup")


# The files SQLite keeps beside a database, which belong to it: moved with it, never left beside another.
SIDE_FILES = ("-wal", "-shm", "-journal")


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # how a rollback journal's header begins while it is live


def hot_journal(path: Path | str) -> Path | None:
    """The rollback journal beside the database when it holds a transaction that never committed (a start killed
    while the database was still in journal mode DELETE: a new account's first transaction, or a restored
    database's first start putting WAL back), else None. A WAL database (every running engine's) never has one."""
    journal = Path(str(path) + "-journal")
    try:
        with open(journal, "rb") as f:
            # A journal whose header SQLite zeroed (its transaction done, the file not yet deleted) is none.
            return journal if f.read(8) == JOURNAL_MAGIC else None
    except OSError:
        return None


def roll_back_journal(path: Path | str, timeout: float = 5.0) -> None:
    """A hot journal (hot_journal) rolled back, as SQLite does at the first open that may write: its own recovery,
    which puts the pages the transaction changed back as they were committed. A read-only connection cannot, and
    would refuse the database for good as one it "cannot write"."""
    if hot_journal(path) is None:
        return
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=timeout)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def refuse_not_a_file(path: Path | str) -> None:
    """NotADatabase when what is at the database's path is no file (a directory): SQLite, asked to open it, says
    it cannot, which reads as a disk that failed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there, or nothing to tell yet: opening it says what
    if stat.S_ISDIR(mode):
        raise NotADatabase(f"{path}: is a directory, not a database; it was left as it is: storage.path names the "
                           "database file (--data-dir the directory it is in)")
    if not stat.S_ISREG(mode):
        raise NotADatabase(f"{path}: is not a regular file, not a database; it was left as it is")


# A database's tables, views and triggers, ffe's or not (SQLite's own left out), with the table a trigger is on.
_SQL_OBJECTS = ("SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') AND name "
                "NOT LIKE 'sqlite_%' ORDER BY rowid")


def foreign(version: int, objects: Iterable[Any]) -> str | None:
    """What shows that a database (`version`: its user_version; `objects`: its (type, name, table) tables, views and
    triggers) is another application's, or None. ffe makes its tables and sets the version in one transaction:
    tables without a version, or none of ffe's tables, are not ffe's. A database with the version and every one of
    ffe's tables of that version is ffe's: a view, a table or an index beside them is the operator's, for reports of
    their own, and changes nothing ffe writes or reads. With only part of ffe's tables (damage, said by the checks
    of damage), a table or view no ffe release makes shows another application's. Beyond this release's version, a
    newer ffe's tables are not judged (refuse_newer_schema says it). Triggers are judged apart (altered_writes)."""
    found = [(str(kind), str(name)) for kind, name, *_ in objects if kind != "trigger"]
    if not found:
        return None  # no table yet: nothing of anyone's
    ours = schema_of(SCHEMA_VERSION)
    theirs = [f"{kind} {name}" for kind, name in found if kind != "table" or name not in ours]
    shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
    if len(theirs) == len(found):
        return f"it holds {shown} and none of ffe's tables"
    if version == 0:
        return f"it holds {shown or 'tables'} without ffe's schema version"
    if not theirs or version > SCHEMA_VERSION:
        return None
    missing = set(schema_of(version)) - {name for kind, name in found if kind == "table"}
    if missing:
        return f"it holds {shown}, which ffe never makes, beside only part of ffe's tables"
    return None


def altered_writes(objects: Iterable[Any]) -> str | None:
    """A trigger on one of ffe's tables (`objects` as foreign's), or None. ffe makes none: one runs inside ffe's
    own writes, and could change or add records behind the engine's back, or fail its writes, so the records would
    no longer be what ffe wrote. A trigger on a table or view of the operator's runs only on their own writes."""
    ours = schema_of(SCHEMA_VERSION)
    for kind, name, table in objects:
        if kind == "trigger" and table in ours:
            return (f"trigger {name} on table {table}, which ffe never makes: it would change ffe's records as "
                    f"ffe writes them; it was left as it is: drop it (DROP TRIGGER {name}) and run again")
    return None


def refuse_foreign(path: Path | str, conn: sqlite3.Connection, checked: bool = False) -> None:
    """NotADatabase when the database `conn` reads is another application's (foreign): a start would make its
    tables beside that application's and trade an account inside its file; or when a trigger on ffe's tables would
    change its records as they are written (altered_writes). Damage comes first: a schema that looks foreign in a
    file SQLite's quick check fails (unless `checked`: it passed) is left to the checks of damage."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    objects = conn.execute(_SQL_OBJECTS).fetchall()
    problem = foreign(int(version), objects)
    altered = altered_writes(objects) if problem is None else None
    if problem is None and altered is None:
        return
    if checked or check_problems(conn.execute("PRAGMA quick_check").fetchall()) == ["ok"]:
        raise not_ffe_database(path, problem) if problem is not None else NotADatabase(f"{path}: {altered}")


def peek_foreign(path: Path | str) -> None:
    """refuse_foreign before the database is opened the usual way, which puts -wal and -shm files beside a WAL
    database (read-only too), and rolls back a hot journal for a start: the file read as it is (immutable), when
    nothing beside it holds more of it. A file that cannot be read so is left to the checks that follow."""
    path = Path(path)
    if not path.is_file() or path.with_name(path.name + "-wal").exists() or hot_journal(path) is not None:
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        refuse_foreign(path, conn)
    except sqlite3.DatabaseError:
        return  # damaged, or no database at all: said as such by what opens it next
    finally:
        conn.close()


# What a start checks a database with: SQLite's integrity check, not its quick check, which compares no index with its
# table (an index entry damaged passes it, and the engine would trade on records `ffe doctor` and `ffe backup` refuse).
# It reads every index whole: about 0.3 s for a 35 MB database.
START_CHECK = "PRAGMA integrity_check"


def peek_damage(path: Path | str) -> bool:
    """SQLite's integrity check of the file read as it is (immutable), when nothing beside it holds more of it (no
    -wal, no hot journal): a damaged file is refused (DamagedDatabase) before the usual open, which would leave -wal
    and -shm files beside it, read-only too, and so the damaged file is left as it is. Returns whether it was
    checked (and passed): otherwise the check is the usual open's to make."""
    path = Path(path)
    try:
        problems = _damage_as_is(path, whole=True)
    except sqlite3.DatabaseError as exc:
        raise _refusal(path, exc) from None
    if problems is None:
        return False
    if problems != ["ok"]:
        raise damaged_database(path, first_problem(problems))
    return True


def _damage_as_is(path: Path, whole: bool = False) -> list[str] | None:
    """SQLite's quick check of the file read as it is (immutable: nothing is made beside it), when nothing beside it
    holds more of it (no -wal, no hot journal); None when it was not checked so. `whole`: its integrity check, which
    also compares every index with its table (START_CHECK). What SQLite raises reading it is raised."""
    if not path.is_file() or path.with_name(path.name + "-wal").exists() or hot_journal(path) is not None:
        return None
    try:
        conn = _open_as_is(path)
    except sqlite3.Error:
        return None
    try:
        return check_problems(conn.execute(START_CHECK if whole else "PRAGMA quick_check").fetchall())
    finally:
        conn.close()


def _open_as_is(path: Path) -> sqlite3.Connection:
    """The file read as it is (immutable): no -wal or -shm is made beside it, nor anything locked. Only for a file
    with nothing beside it that holds more of it (no -wal, no hot journal)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)


def _in_wal_mode(path: Path) -> bool:
    """Whether the file's header says WAL: the usual open of such a file, read-only too, makes -wal and -shm files
    beside it (one in rollback-journal mode, a backup's copy, makes none)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header.startswith(b"SQLite format 3\x00") and 2 in (header[18], header[19])


def check_files(path: Path | str, new_ok: bool, *, whole_wal: bool = False) -> bool:
    """The files of the database at `path` before SQLite opens them (opening can change them): NotADatabase for a
    directory there; DamagedDatabase for a main file missing or empty beside a WAL that holds pages
    (wal_without_database), and, with `whole_wal` (no engine writes it now: a start's, a doctor's with none
    running), for a WAL SQLite would not read whole (walcheck); DamagedRecords for one missing or empty when `new_ok`
    is false (the audit trail holds records: the account's database was lost, and a new one would forget it).
    Returns whether there is a database to open and read (False: none yet)."""
    path = Path(path)
    refuse_not_a_file(path)
    problem = wal_without_database(path)
    if problem is None and whole_wal:
        problem = damaged_wal(path)
    if problem is not None:
        raise damaged_database(path, problem)
    size = path.stat().st_size if path.exists() else None
    if not size and not new_ok:
        raise lost_database(path, "is missing" if size is None else "holds no records")
    if size:
        refuse_headerless(path)
    return bool(size)


def refuse_headerless(path: Path) -> None:
    """DamagedDatabase for a file there that does not begin with SQLite's header: SQLite reads one shorter than its
    header as an empty database, which a start would make a new account in, writing over what is there. (Beside a
    hot journal, a first transaction killed half way: rolled back.)"""
    if reach.is_file(path) and path.stat().st_size and not _sqlite_header(path) and hot_journal(path) is None:
        raise damaged_database(path, "is no SQLite database: it does not begin with SQLite's header")


def _sqlite_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return True  # what cannot be read is said by the open that follows


def check_for_start(path: Path, new_ok: bool, timeout: float, own_market: bool = False) -> None:
    """The checks a start makes before it opens the database to write it, on a read-only connection: a writing
    one, closed on a damaged file, would merge the WAL into it and delete the WAL. The files (check_files); whether
    it is ffe's at all (peek_foreign, refuse_foreign: another application's database is never taken over as a new
    account); SQLite's integrity check (START_CHECK); the schema version; the schema and the records a start
    restores, as ffe wrote them (the market's too with `own_market`: record_checks). A start never goes on over a
    damaged state, nor starts afresh in its place."""
    if not check_files(path, new_ok, whole_wal=True):
        return  # a first start (an empty file: one a first start killed at once left)
    peek_foreign(path)
    checked = peek_damage(path)  # before the usual open, which would leave files beside a damaged one
    try:
        if checked:
            # Checked as it is, nothing beside it: its records are read so too, as the usual open, read-only
            # too, would leave an empty -wal and a -shm beside a database whose records then refuse the start.
            conn = _open_as_is(path)
        else:
            roll_back_journal(path, timeout)
            conn = open_read_only(path, timeout, peek=False)  # peeked above
    except sqlite3.DatabaseError as exc:
        raise _refusal(path, exc) from None
    try:
        problems = ["ok"] if checked else check_problems(conn.execute(START_CHECK).fetchall())
        if problems != ["ok"]:
            raise damaged_database(path, first_problem(problems))
        refuse_foreign(path, conn, checked=True)  # what peek_foreign could not read: beside a -wal, a hot journal
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        refuse_newer_schema(path, version)
        (tables,) = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        if tables == 0 and not new_ok:
            raise lost_database(path, "holds no records")
        if version > 0:
            problem = schema_damage(version, schema_columns(conn))
            if problem is not None:
                raise damaged_database(path, problem)
            for sql, judge in record_checks(every=False, own_market=own_market):
                for row in conn.execute(sql).fetchall():
                    problem = judge(tuple(row))
                    if problem is not None:
                        raise damaged_database(path, problem)
            problem = (fills_damage(conn) or contradictions(conn) or positions_damage(conn)
                       or status_went_back(conn) or _state_row_damage(path, conn))
            if problem is not None:
                raise damaged_database(path, problem)
    except sqlite3.DatabaseError as exc:
        raise _refusal(path, exc) from None
    finally:
        conn.close()


def _made_private(path: Path) -> None:
    """A new database file made 0600 here, whatever the process's umask when the connection's thread opens it (a
    start stopped at once restores the caller's meanwhile); SQLite gives its -wal and -shm the file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise storage_failure(path, exc) from None


def _refusal(path: Path, exc: sqlite3.DatabaseError) -> FfeError:
    """An SQLite error met reading the database at `path` for a start: a lock held too long (or a file that cannot
    be opened) is a storage failure; damage (what SQLite finds is not what it wrote) a damaged database."""
    if isinstance(exc, sqlite3.OperationalError) and _is_write_failure(exc):
        return closed_to_reader(path) or storage_failure(path, exc)
    return unreadable_database(path, exc)


def says_state(rec: Any) -> bool:
    """Whether an `engine_state` event's record says a state: an approval mode change is recorded as one too, with
    the state unchanged and the reason `approval mode auto|manual`."""
    return isinstance(rec, dict) and not str(rec.get("reason", "")).startswith("approval mode ")


def state_unsaid(row: tuple[Any, ...] | None, rec: dict[str, Any] | None) -> str | None:
    """How the stored engine state (state, reason, ...) differs from what the last `engine_state` event says (a
    state stored on its own: HALTED on a full disk, HALTED kept across a restore), or None when they agree."""
    if row is None:
        return None
    said = None if rec is None else (rec.get("state"), rec.get("reason"))
    if said == (row[0], row[1]):
        return None
    return (f"the engine_state row says {row[0]} ({row[1]}), the last engine_state event "
            + ("is missing" if said is None else f"says {said[0]} ({said[1]})"))


def state_unsaid_why(row: tuple[Any, ...] | None, rec: dict[str, Any] | None, *, reserve_used: bool,
                     restored: bool) -> tuple[str, str | None] | None:
    """The engine_state row (state, reason, by) against the last `engine_state` event that says a state: None when
    they agree; else how they differ (state_unsaid) and why ffe stored the row on its own, or None for why: no ffe
    writes it (edited by hand), and `ffe doctor` fails it as the start refuses it. The one judgement of both. Only
    HALTED is ever stored without its event, when the records could not be written (`reserve_used`: the disk
    reserve emptied for it), kept across a restore (`restored`: the restore's marker still there), or by a start
    refused for an audit trail that disagrees with the database; and PAUSED kept across a restore (the operator's
    stops of the records it replaced)."""
    unsaid = state_unsaid(row, rec)
    if row is None or unsaid is None:
        return None
    if row[0] == EngineState.PAUSED.value and row[2] == "restore" and restored:
        return unsaid, "PAUSED kept across a restore (the operator's stops), without its event"
    if row[0] != EngineState.HALTED.value:
        return unsaid, None
    if reserve_used:
        return unsaid, "HALTED stored when the records could not be written, without its event"
    if row[2] == "restore" and restored:
        return unsaid, "HALTED kept across a restore, without its event"
    if row[2] == "engine" and row[1] == TRAIL_DAMAGED_HALT:
        return unsaid, ("HALTED stored by a start that found the audit trail disagreeing with the database, without "
                        "its event (the trail took none)")
    return unsaid, None


def _record_read(path: Path, seq: Any, data: Any, record: Callable[[Any, Any], bytes]) -> Any:
    """An events row's audit record, parsed; a row that is not JSON is a damaged database, named with its seq."""
    try:
        return json.loads(record(seq, data))
    except ValueError:
        raise damaged_database(path, unreadable(f"table events, seq {seq}", "data", data, "JSON")) from None


def _last_state_event(path: Path, query: Callable[[str, tuple[Any, ...]], list[Any]],
                      record: Callable[[Any, Any], bytes]) -> dict[str, Any] | None:
    """The record of the last `engine_state` event that says a state, read with `query` (a read-only connection's)
    and `record` (an events row's audit line), or None."""
    seq = None
    while True:
        rows = query(_SQL_STATE_EVENTS, (seq, seq, _STATE_EVENTS_CHUNK))
        for seq, data in rows:
            rec = _record_read(path, seq, data, record)
            if says_state(rec):
                return dict(rec)
        if len(rows) < _STATE_EVENTS_CHUNK:
            return None


def _state_row_damage(path: Path, conn: sqlite3.Connection) -> str | None:
    """What is wrong with the engine_state row a start restores, judged against its last event as `ffe doctor`
    judges it (state_unsaid_why), or None: a row that is not as ffe writes it (a HALTED account's row set to
    RUNNING by hand) would start in a state the records never said."""
    rows = conn.execute("SELECT state, reason, by FROM engine_state WHERE id = 1").fetchall()
    if not rows:
        return None

    def query(sql: str, params: tuple[Any, ...]) -> list[Any]:
        return conn.execute(sql, params).fetchall()

    marker = conn.execute("SELECT value FROM kv WHERE key = ?", (RESTORED_KEY,)).fetchall()
    judged = state_unsaid_why(tuple(rows[0]), _last_state_event(path, query, functools.partial(event_line, path)),
                              reserve_used=reserve.used(path.parent),
                              restored=bool(marker) and json.loads(marker[0][0]) is not None)
    return None if judged is None or judged[1] is not None else judged[0]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _dumps_books(obj: Any) -> str:
    """The books stored at every bar of a live run, a few kilobytes each time (the simulated market's recent bars):
    orjson, several times faster than `_dumps` for them. Their figures are finite (never NaN, which it would write
    as null)."""
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


_SQL_TRADE = ("INSERT INTO trades (id, symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, opened_ts, "
              "closed_ts, entry_decision_id, exit_client_order_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
_SQL_STATE = ("INSERT INTO engine_state (id, state, reason, by, updated_ts) VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) "
              "DO UPDATE SET state=excluded.state, reason=excluded.reason, by=excluded.by, "
              "updated_ts=excluded.updated_ts")
_SQL_SCORE = "INSERT INTO provider_scores (trade_id, provider, action, correct, return_pct) VALUES (?,?,?,?,?)"
# The engine_state events, newest first, before a seq (or all of them when it is NULL).
_SQL_STATE_EVENTS = ("SELECT seq, data FROM events WHERE event = 'engine_state' AND (? IS NULL OR seq < ?) "
                     "ORDER BY seq DESC LIMIT ?")
_STATE_EVENTS_CHUNK = 50
_SQL_KV = ("INSERT INTO kv (key, value, updated_ts) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
           "value=excluded.value, updated_ts=excluded.updated_ts")


_ORDER_COLUMNS = ("client_order_id, decision_id, venue, symbol, side, type, quantity, price, reduce_only, reason, "
                  "status, filled, average, fee, exchange_id, created_ts, updated_ts, error")
_SQL_JOURNAL_ORDER = (f"INSERT INTO orders ({_ORDER_COLUMNS}, intent, fee_base, fee_base_value) "
                      f"VALUES ({','.join('?' * 21)})")
_SQL_ORDERS = f"SELECT {_ORDER_COLUMNS}, fee_base, fee_base_value FROM orders"
_SQL_POSITION = ("INSERT OR REPLACE INTO positions (symbol, side, quantity, entry_price, opened_ts, stop_loss, "
                 "take_profit, entry_decision_id, fees) VALUES (?,?,?,?,?,?,?,?,?)")
_APPROVAL_COLUMNS = ("approval_id, decision_id, symbol, side, quantity, price, created_ts, expires_ts, status, by, "
                     "ended_ts, intent, gates, client_order_id")

_SQL_NEW_APPROVAL = f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES ({','.join('?' * 14)})"
# An approval's end: only a pending one ends, so a final status is never written over.
_SQL_END_APPROVAL = ("UPDATE approvals SET status = ?, by = ?, ended_ts = ?, client_order_id = ? "
                     f"WHERE approval_id = ? AND status = '{APPROVAL_PENDING}'")

_SQL_ORDER_STATE = ("UPDATE orders SET status=?, filled=?, average=?, fee=?, exchange_id=?, updated_ts=?, error=?, "
                    "fee_base=?, fee_base_value=? WHERE client_order_id=?")


def refuse_newer_schema(path: Path | str, version: int) -> None:
    """SchemaError when `version` (a database's user_version) is a newer ffe's: an older release must neither change
    nor read as whole what it does not know."""
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path}: database schema version {version} is newer than this ffe ({SCHEMA_VERSION}); "
                          "it was left as it is: run the ffe release that wrote it, or a newer one")


def _journal_row(o: Order, intent: dict[str, Any] | None) -> tuple[Any, ...]:
    return (o.client_order_id, o.decision_id, o.venue, o.symbol, o.side.value, o.type, o.quantity, o.price,
            1 if o.reduce_only else 0, o.reason.value, o.status.value, o.filled, o.average, o.fee,
            o.exchange_id, o.created_ts, o.updated_ts, o.error, _dumps(intent or {}), o.fee_base, o.fee_base_value)


def _order_state(o: Order) -> tuple[Any, ...]:
    """An order's changing part: what the venue has said of it so far."""
    return (o.status.value, o.filled, o.average, o.fee, o.exchange_id, o.updated_ts, o.error, o.fee_base,
            o.fee_base_value, o.client_order_id)


def _position_row(p: Position) -> tuple[Any, ...]:
    return (p.symbol, p.side.value, p.quantity, p.entry_price, p.opened_ts, p.stop_loss, p.take_profit,
            p.entry_decision_id, p.fees)


def _trade_row(t: ClosedTrade) -> tuple[Any, ...]:
    return (t.trade_id, t.symbol, t.side.value, t.quantity, t.entry_price, t.exit_price, t.pnl, t.fees, t.reason,
            t.opened_ts, t.closed_ts, t.entry_decision_id, t.exit_client_order_id)


@dataclass(slots=True)
class FillRecord:
    """What a fill changed in the engine's book, recorded in the fill's own transaction."""

    # The clock's wall time when the fill is recorded: the stored books' (`kv`) updated_ts, as every other writer of
    # them stamps it. Not the fill's own time, which is the market's (a day ahead of the wall clock on a simulated
    # market, years behind it in a replay): `ffe report providers` says the weights were stored then.
    wall: float
    position: Position | None = None  # the position after the fill, to store
    closed_symbol: str | None = None  # or: the symbol whose position the fill closed
    trade: ClosedTrade | None = None  # a trade the fill closed (its trade_id is set once stored)
    kv: dict[str, Any] = field(default_factory=dict)  # book state to store with it
    # The closed trade's providers scored (provider, action, correct, return %), stored with its trade id.
    scores: list[tuple[str, str, bool, float]] = field(default_factory=list)
    # Publishes the events that say what it changed (a position opened, a trade closed, its id set by then): they
    # are committed with it.
    announce: Callable[[], None] | None = None
    then: Callable[[], Awaitable[None]] | None = None  # feedback, after it is recorded


class Store:
    def __init__(self, conn: Any, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._gates: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._alerts: list[tuple[Any, ...]] = []
        self._last_trade_id = 0
        self.batch = False
        self._deferred_indexes = False
        # The first write the disk refused (the audit trail's or the database's). From then on nothing more is
        # written but HALTED (record_halt): the events buffered when it failed were published with rows that were
        # never written (an approval's end, a fill), and committed later, once the disk had room again, they would
        # say what the records do not hold.
        self.failed: StorageError | None = None
        self._before_events: Callable[[], Awaitable[None]] | None = None
        self._written_seq: Callable[[], int] | None = None
        self._last_seq = 0  # of the last event buffered
        # The seq of the last event committed: what happened, as far as the records go (the engine's memory and the
        # audit file can be ahead of it by the events being written). Readers that show events as they come (the
        # control socket's event stream) send no later one.
        self.committed_seq = 0
        self._writing_seq = 0  # of the last event written in the open transaction
        # A fill the engine applied to its books in memory could not be recorded: those books hold a fill the
        # records do not, and are never stored (put_kvs refuses them; the engine is stopping on the failure).
        self._books_ahead = False
        # While a fill is being recorded: the seq of the last event before its own, which other writers write up to
        # and no further (add_fill).
        self._held_after: int | None = None
        self._fill_turn = asyncio.Lock()
        # The account's data directory, where the disk reserve is kept (reserve.py); None for a backtest's own.
        self._reserve_dir: Path | None = None
        # The reserve is emptied (found so at open, or emptied since): a start comes up HALTED.
        self.reserve_used = False
        # An account's database file as opened, (device, inode); and how it left its path while open, if it did
        # (check_in_place): its records are then written back there as it closes.
        self._file_id: tuple[int, int] | None = None
        self._left_its_place: str | None = None
        self._saved: Path | None = None
        # Its size as last seen: it only grows while ffe has it open (checkpoints add pages, none are given back).
        # The file is never opened here beside SQLite's own descriptor: closing another descriptor of it would drop
        # SQLite's locks on it.
        self._size = 0
        # One connection, several tasks (the bar loop, housekeeping, operator commands): a write and its
        # transaction must not interleave with another's.
        self._lock = asyncio.Lock()
        # The outbox id of the alert each channel's delivery has taken (next_alert) and not yet marked sent or
        # failed: on its way, so never trimmed (a dropped alert must be one the channel never gets).
        self._on_wire: dict[str, int] = {}

    # ---------------------------------------------------------------- lifecycle
    @staticmethod
    def backtest_writer(path: Path | str, audit_path: Path | str | None = None) -> WriterProcess:
        """A backtest database's writer process (sqlwriter.py), started: its interpreter comes up on the other core
        while the caller goes on, until it hands the writer to `open`."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_failure(path.parent, exc) from None
        if audit_path is not None:
            try:
                Path(audit_path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_failure(Path(audit_path).parent, exc) from None
        return WriterProcess(str(path), str(audit_path) if audit_path is not None else None)

    @classmethod
    async def open(cls, path: Path | str, *, backtest: bool = False, synchronous: str = "FULL",
                   audit_path: Path | str | None = None, new_ok: bool = True,
                   writer: WriterProcess | None = None, busy_timeout_s: float = 5.0,
                   own_market: bool = False) -> "Store":
        """The system of record: WAL, every commit synced (`synchronous`), statements on the connection's thread.

        `backtest=True`: a run's own database, written once and never resumed, by a child process that owns the
        connection (sqlwriter.py). Writes go in one transaction from flush to flush, unsynced, with a rollback
        journal (appending needs no copy of each page in a WAL). A crash loses the run, which is re-run, never an
        account's records. With `audit_path`, the child also appends every event record there (the run's audit
        file), so the records cross to it once.

        A database that fails SQLite's quick check, or is not a database at all, raises StorageError before
        anything is written to it. So does one without any records when `new_ok` is false (the caller knows of
        records elsewhere, an audit trail: the account's database was lost, and a new one would forget it). A
        directory or another application's database in its place raises NotADatabase (check_for_start).
        `writer`: the backtest's writer process, started beforehand (`backtest_writer`) for this path.
        `busy_timeout_s`: how long a statement waits for another process's lock before it fails (StorageError).
        `own_market`: the account's market is made in the process (its state stored with the books): one missing
        beside the books is damage too.
        """
        path = Path(path)
        if backtest:
            conn: Any = writer if writer is not None else cls.backtest_writer(path, audit_path)
            for pragma in ("journal_mode=TRUNCATE", "synchronous=OFF", "locking_mode=EXCLUSIVE",
                           "cache_size=-65536"):
                await conn.execute(f"PRAGMA {pragma}")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_failure(path.parent, exc) from None
            # Read before anything is written, and read-only: a damaged file is refused as it was found.
            await asyncio.to_thread(check_for_start, path, new_ok, busy_timeout_s, own_market)
            _made_private(path)
            conn = await Connection.connect(str(path))
        store = cls(conn, path)
        if not backtest:
            store._reserve_dir = path.parent
            store.reserve_used = reserve.used(path.parent)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                store._file_id, store._size = (st.st_dev, st.st_ino), st.st_size
        if backtest:  # the child derives the index rows from the records
            store.add_event = conn.add_event  # type: ignore[method-assign]
        try:
            if not backtest:
                await conn.execute("PRAGMA journal_mode=WAL")
                await conn.execute(f"PRAGMA synchronous={synchronous}")
            await conn.execute(f"PRAGMA busy_timeout={max(1, round(busy_timeout_s * 1000))}")
            await store._migrate()
            # The largest id ever given (AUTOINCREMENT's sqlite_sequence keeps it when its row is deleted): a trade's
            # id is never given again, so its events never name two trades.
            cur = await conn.execute("SELECT MAX(COALESCE((SELECT MAX(id) FROM trades), 0), COALESCE((SELECT seq FROM "
                                     "sqlite_sequence WHERE name = 'trades'), 0))")
            (store._last_trade_id,) = await cur.fetchone()
            cur = await conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
            (store.committed_seq,) = await cur.fetchone()
        except BaseException as exc:
            await conn.close()  # and its thread
            if isinstance(exc, sqlite3.OperationalError) and _is_write_failure(exc):
                # SQLite says only `unable to open database file` of a file it cannot open: one of the database's
                # files closed to this user (its owner, its mode) is no disk's failure.
                raise closed_to_reader(path) or storage_failure(path, exc) from None
            if isinstance(exc, sqlite3.DatabaseError) and (not isinstance(exc, sqlite3.OperationalError)
                                                           or str(exc).startswith(("no such table", "no such column"))):
                raise damaged_database(path, str(exc)) from None
            raise
        if backtest:
            store.batch = True
            await conn.execute("BEGIN")
        return store

    def _loads(self, raw: Any, where: str, column: str) -> Any:
        """A JSON value read back; one that is not JSON is a damaged database."""
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            raise damaged_database(self.path, unreadable(where, column, raw, "JSON")) from None

    def _known(self, kind: type[_EnumT], raw: Any, where: str, column: str, expected: str) -> _EnumT:
        """An enum's value read back; one that is not among its values is a damaged database."""
        try:
            return kind(raw)
        except ValueError:
            raise damaged_database(self.path, unreadable(where, column, raw, expected)) from None

    async def _check_version(self) -> int:
        """The database's schema version; one written by a newer ffe is refused (an older binary rolled back onto
        it must not change what it does not know)."""
        cur = await self.conn.execute("PRAGMA user_version")
        (version,) = await cur.fetchone()
        refuse_newer_schema(self.path, version)
        return int(version)

    async def _migrate(self) -> None:
        version = await self._check_version()
        for v in range(version + 1, SCHEMA_VERSION + 1):
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[v]:
                    await self.conn.execute(stmt)
                await self.conn.execute(f"PRAGMA user_version={v}")
                await self.conn.execute("COMMIT")
            except BaseException as exc:
                await self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and not _is_write_failure(exc):
                    # Tables that are not those of the version the file says (a table or column there already):
                    # nothing was changed.
                    raise damaged_database(self.path, f"its schema version {version} is not that of its tables: the "
                                                      f"migration to version {v} failed: {exc}") from None
                raise

    async def defer_decision_indexes(self) -> None:
        """A backtest's own database (`backtest=True`): the decision index tables' indexes by decision id are
        dropped now and built when the store is closed. A run cut short keeps its rows without them (a lookup by
        decision id then reads the whole table, and finds the same rows)."""
        assert self.batch, "only a backtest's database defers its indexes"
        for name in DECISION_INDEXES:
            await self.conn.execute(f"DROP INDEX IF EXISTS {name}")
        self._deferred_indexes = True

    def check_in_place(self) -> None:
        """StorageError when the account's database file is no longer at its path (removed, or another file put
        there, while the engine ran): what it records from then on would be lost with the process, and a start would
        not find it. Its records are written back there as it closes (close)."""
        if self._file_id is None or self._left_its_place is not None:
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._file_id:
                self._check_not_written_over(st)
                return
            how = "replaced by another file"
        except FileNotFoundError:
            how = "removed"
        except OSError:
            return  # the directory cannot be looked at now: its writes say what is wrong, if anything
        self._left_its_place = how
        raise StorageError(f"{self.path}: the database file was {how} while the engine ran: its records would no "
                           "longer be where a start reads them; they are written back as the engine stops (beside it, "
                           f"{self.path.name}.saved-TIME, if another file is in its place)")

    def _check_not_written_over(self, st: os.stat_result | None = None) -> None:
        """DamagedDatabase when the account's file at its path is smaller than the size last seen: written over in
        place (emptied, a smaller file copied onto it), what the connection reads and writes is no longer the
        account's, and nothing of it can be written back. Looked at before every write too (_Writing): the commit's
        checkpoint would write the WAL's pages back into the file and grow it past that size, hiding the change."""
        if self._file_id is None or self._left_its_place is not None:
            return
        if st is None:
            try:
                st = os.stat(self.path)
            except OSError:
                return  # removed, or not to be looked at now: check_in_place's to say
            if (st.st_dev, st.st_ino) != self._file_id:
                return  # replaced: check_in_place's to say
        if st.st_size >= self._size:
            self._size = st.st_size
            return
        self._left_its_place = "written over"
        raise damaged_database(self.path, "the file was written over while the engine ran, not by ffe")

    def _seen_after_write(self) -> None:
        """The file's size after a write: its commit's checkpoint may have grown it, and the next write compares
        with it (_check_not_written_over)."""
        if self._file_id is None or self._left_its_place is not None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._file_id and st.st_size > self._size:
                self._size = st.st_size

    async def _write_back(self) -> None:
        """The records of a database file that left its path, as the connection reads them (HALTED among them),
        copied beside it, then put back at the path when nothing has taken it (else left beside it), said in the
        log: nothing recorded is lost with the process, and the next start finds them."""
        if self._left_its_place == "written over":
            return  # the file the connection reads is not the account's any more
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        saved = self.path.with_name(f"{self.path.name}.saved-{stamp}")
        try:
            await self.conn.copy_to(str(saved))
        except (sqlite3.Error, OSError) as exc:
            log.error("database file left its path: its records could not be copied out", path=str(self.path),
                      error=str(exc))
            return
        self._saved = saved

    def _put_back(self) -> None:
        saved = self._saved
        if saved is None:
            return
        if os.path.lexists(self.path):
            log.error("database file left its path: its records are saved beside it; another file is in its place",
                      path=str(self.path), saved=str(saved))
            return
        try:
            os.replace(saved, self.path)
        except OSError as exc:
            log.error("database file left its path: its records are saved beside it", path=str(self.path),
                      saved=str(saved), error=str(exc))
            return
        log.warning("database file left its path: its records were written back", path=str(self.path))

    async def close(self) -> None:
        with contextlib.suppress(StorageError):
            self.check_in_place()  # removed after the engine's last look (while it stopped): written back too
        if self._left_its_place is not None:
            with contextlib.suppress(Exception):
                await self.flush()  # what is buffered (HALTED's record with it) goes into the copy
            await self._write_back()
        try:
            if self.failed is None:
                await self.flush()
            if self._deferred_indexes and self.failed is None:
                for stmt in DECISION_INDEXES.values():
                    await self.conn.execute(stmt)
                self._deferred_indexes = False
            if self.batch and self.failed is None:
                await self.conn.execute("COMMIT")
                self.batch = False
        finally:  # a failed write must not leave the connection (or a backtest's writer process) open
            if self._left_its_place == "written over":
                # SQLite checkpoints the WAL into the file as its last connection closes: not into another's file.
                await self.conn.close(checkpoint=False)
            else:
                await self.conn.close()
            if self._left_its_place is not None:
                self._put_back()  # once closed: SQLite removes its -wal and -shm at the path as it closes
            if isinstance(self.failed, WriterError) and str(self.path) != MEMORY:
                # A writer process killed in a transaction leaves its journal hot: rolled back here, as no start of
                # a run's records ever comes to do it, so that what the run committed reads as a run cut short.
                with contextlib.suppress(sqlite3.Error, OSError):
                    await asyncio.to_thread(roll_back_journal, self.path)

    def _writing(self, audit_first: bool = True) -> _Writing:
        """One writer at a time; a write the disk refuses becomes a StorageError naming the database.

        With `audit_first`, the events buffered so far go to the audit trail first, before the lock is taken: a
        hung audit disk holds up this write only, and the outbox's own writes (`audit_first=False`) still go
        through, so an alert about the stall can leave."""
        return _Writing(self, audit_first)

    async def record_halt(self, reason: str, by: str, ts: float, *, free_room: bool = True) -> bool:
        """After a write failed: HALTED stored on its own, if it still can be (the rows buffered before it cannot
        be written first, so they stay buffered), in the room the disk reserve frees; failing that, after a WAL
        checkpoint, which may free room (a file size limit: the WAL starts again). Returns whether it was
        stored. Not `free_room`: no write failed (records that disagree), the reserve is kept."""
        if self._left_its_place == "written over":
            return False  # the file at the path is not the account's: nothing of it goes there
        async with self._lock:
            with contextlib.suppress(sqlite3.Error):  # a transaction the failure left open
                await self.conn.execute("ROLLBACK")
            if free_room and self._reserve_dir is not None and reserve.release(self._reserve_dir):
                self.reserve_used = True  # the next start comes up HALTED, stored here or not
            for before in ("", "PRAGMA wal_checkpoint(TRUNCATE)"):
                if before:
                    with contextlib.suppress(sqlite3.Error):
                        await self.conn.execute(before)
                try:
                    await self.conn.execute(_SQL_STATE, ("HALTED", reason, by, ts))
                except sqlite3.Error as exc:
                    if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                        return False  # another process holds the database: a checkpoint would wait for it too
                    continue
                return True
            return False

    async def keep_reserve(self) -> None:
        """The disk reserve in full (reserve.py), once the state a start found is stored: an emptied one is the
        mark of a run that stopped on a record it could not write until then. StorageError when there is no
        room for it."""
        if self._reserve_dir is not None:
            await asyncio.to_thread(reserve.fill, self._reserve_dir)
            self.reserve_used = False

    def _tx(self) -> _Tx:
        """A transaction of its own, or (batch mode) part of the open one."""
        return _Tx(self)

    # ---------------------------------------------------------------- buffered writes
    def add_gates(self, gates: Iterable[Any], *, decision_id: str | None, client_order_id: str | None,
                  ts: float) -> None:
        """Gates checked outside a decision's own evaluation (an order refused later, an approval re-checked)."""
        self._gates.extend([(decision_id, client_order_id, i, g.code, scalar(g.value), scalar(g.limit),
                             1 if g.passed else 0, g.detail, ts) for i, g in enumerate(gates)])

    def add_event(self, ev: Event, line: bytes) -> None:
        """Event sink: the events table holds each event's audit record; a `decision` event's record is also
        indexed in the decisions, votes and gate_results tables (sqlwriter.index_rows)."""
        self._events.append((ev.seq, ev.ts, ev.name, line))
        self._last_seq = ev.seq

    def write_events_first(self, write: Callable[[], Awaitable[None]], written_seq: Callable[[], int]) -> None:
        """Another record of the same events (the audit trail) is never behind the database: `write()` is awaited
        before a write (it writes every event buffered so far there), and only events up to `written_seq()`, the
        last one that record holds, are written here; later ones stay buffered for a later flush. If `write()`
        raises, nothing is written."""
        self._before_events = write
        self._written_seq = written_seq

    async def _write_buffers(self) -> None:
        gates, events = self._gates, self._events
        self._gates, self._events = [], []
        # Not all in the audit trail yet (published while it was written, or it is stalled), or published with a
        # fill not recorded yet: those wait.
        last = self._written_seq() if self._written_seq is not None else None
        if self._held_after is not None:
            last = self._held_after if last is None else min(last, self._held_after)
        if events and last is not None and events[-1][0] > last:
            n = len(events)
            while n and events[n - 1][0] > last:
                n -= 1
            events, self._events = events[:n], events[n:]
        c = self.conn
        if isinstance(c, WriterProcess):
            c.write_events()
        elif events:
            await c.executemany(SQL_EVENT, events)
            decisions: list[tuple[Any, ...]] = []
            votes: list[tuple[Any, ...]] = []
            index_rows(events, decisions, votes, gates)
            if decisions:
                await c.executemany(SQL_DECISION, decisions)
            if votes:
                await c.executemany(SQL_VOTE, votes)
            # The chain head in the transaction of the records it covers: `ffe audit verify` finds a trail cut
            # short of it, or whose lines up to it were rewritten. (A backtest's writer process stores its own.)
            seq, ts, _name, line = events[-1]
            self._writing_seq = seq
            await c.execute(_SQL_KV, (HEAD_KEY, _dumps({"seq": seq, "hash": line_hash(line)}), ts))
        if gates:
            await c.executemany(SQL_GATE, gates)
        if self._alerts:
            alerts, self._alerts = self._alerts, []
            await c.executemany(_SQL_ALERT, alerts)

    async def flush(self, audit_first: bool = True) -> None:
        """Write what is buffered. `audit_first=False` (the alerts' outbox): without waiting for the audit trail,
        so only the events it already holds, and the alerts."""
        async with self._writing(audit_first):
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if self.batch:
            await self._write_buffers()
            await self.conn.execute("COMMIT")
            self.committed_seq = max(self.committed_seq, self._writing_seq)
            await self.conn.execute("BEGIN")
            return
        if not (self._gates or self._events or self._alerts):
            return
        async with self._tx():
            await self._write_buffers()

    async def _write(self, sql: str, params: tuple[Any, ...] | list[Any] = (), audit_first: bool = True) -> None:
        """Flush buffered rows, then run one statement in its own committed transaction."""
        async with self._writing(audit_first):
            if not self.batch:
                await self._flush_locked()
            await self.conn.execute(sql, params)

    # ---------------------------------------------------------------- engine state and key/value
    async def get_engine_state(self) -> tuple[str, str, str] | None:
        """(state, reason, by) as stored; the state is one of EngineState's values."""
        cur = await self.conn.execute("SELECT state, reason, by FROM engine_state WHERE id = 1")
        row = await cur.fetchone()
        if not row:
            return None
        self._known(EngineState, row[0], "table engine_state", "state", "an engine state")
        return (row[0], row[1], row[2])

    async def set_engine_state(self, state: str, reason: str, by: str, ts: float,
                               kv: dict[str, Any] | None = None, publish: Callable[[], object] | None = None) -> None:
        """The trading state, with the rows buffered before it, `kv` (what must change with it, as a flatten's
        positions to close) and the events `publish()` publishes (the `engine_state` event that says it), in one
        transaction: stored together or not at all, so a kill never leaves a state its records do not say."""
        rows = [(key, _dumps(value), ts) for key, value in (kv or {}).items()]
        async with self._with_events_of(publish or (lambda: None)):
            await self.conn.execute(_SQL_STATE, (state, reason, by, ts))
            if rows:
                await self.conn.executemany(_SQL_KV, rows)

    async def commit_events(self, publish: Callable[[], object]) -> None:
        """The events `publish()` publishes, with the rows buffered before them, committed before it returns."""
        async with self._with_events_of(publish):
            pass

    async def last_state_event(self) -> dict[str, Any] | None:
        """The record of the last `engine_state` event that says a state (not an approval mode change), or None."""
        seq = None
        while True:
            cur = await self.conn.execute(_SQL_STATE_EVENTS, (seq, seq, _STATE_EVENTS_CHUNK))
            rows = await cur.fetchall()
            for seq, data in rows:
                rec = self._loads(event_line(self.path, seq, data), f"table events, seq {seq}", "data")
                if says_state(rec):
                    return dict(rec)
            if len(rows) < _STATE_EVENTS_CHUNK:
                return None

    async def put_kv(self, key: str, value: Any, ts: float, publish: Callable[[], object] | None = None) -> None:
        """With `publish`, the events it publishes (those that say the change) in the same transaction."""
        if publish is None:
            await self._write(_SQL_KV, (key, _dumps(value), ts))
            return
        async with self._with_events_of(publish):
            await self.conn.execute(_SQL_KV, (key, _dumps(value), ts))

    async def put_kvs(self, values: dict[str, Any], ts: float, *, drop: Iterable[str] = (),
                      publish: Callable[[], object] | None = None) -> None:
        """Several keys in one transaction, with the rows buffered before them: what belongs together (the books of
        one bar: portfolio, market, paper venue, weights) is stored together or not at all, with one sync. `drop`:
        keys deleted in it; `publish`: the events it publishes (those that say the change) written in it too."""
        rows = [(key, _dumps_books(value), ts) for key, value in values.items()]
        dropped = [(key,) for key in drop]
        if publish is not None:
            self._refuse_books_ahead()  # before the events are published, as well as with the lock held
            async with self._with_events_of(publish):
                self._refuse_books_ahead()
                await self._put_rows(rows, dropped)
            return
        async with self._writing():
            self._refuse_books_ahead()  # with the lock held: a write queued behind the failed fill is refused too
            if self.batch:
                await self._put_rows(rows, dropped)
                return
            async with self._tx():
                await self._write_buffers()
                await self._put_rows(rows, dropped)

    async def _put_rows(self, rows: list[tuple[str, str, float]], dropped: list[tuple[str]]) -> None:
        await self.conn.executemany(_SQL_KV, rows)
        if dropped:
            await self.conn.executemany("DELETE FROM kv WHERE key = ?", dropped)

    def _refuse_books_ahead(self) -> None:
        if self._books_ahead:
            raise StorageError(f"{self.path}: a fill could not be recorded, so the books in memory are ahead of the "
                               "records: they were not stored")

    async def delete_kv(self, key: str) -> None:
        await self._write("DELETE FROM kv WHERE key = ?", (key,))

    async def get_kv(self, key: str, default: Any = None) -> Any:
        cur = await self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,))
        row = await cur.fetchone()
        return self._loads(row[0], f"table kv, key {key}", "value") if row else default

    async def exchange_books(self) -> bool:
        """Whether the books stored were made on an exchange's market, which stores no market state with them: a
        live account's (neither of the records only a paper account's books have), or one that says so."""
        cur = await self.conn.execute(_SQL_EXCHANGE_BOOKS)
        return bool((await cur.fetchone())[0])

    async def events_after(self, seq: int, limit: int = 5000) -> list[tuple[int, bytes]]:
        """The next event records after `seq`, in seq order: (seq, audit line)."""
        cur = await self.conn.execute("SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [(r[0], event_line(self.path, r[0], r[1])) for r in await cur.fetchall()]

    async def pin_snapshot(self, monotonic: Callable[[], float]) -> tuple[sqlite3.Connection, int, float]:
        """A second connection whose read transaction holds the database as it is now, buffered rows included
        (written first, the audit trail before them): every record committed so far, none after. The engine waits
        only for the flush and the opening of the read; copying from the pinned view (`copy_pinned`) can then take
        as long as it takes on another thread while writes go on (WAL). Returns it, the last event's seq, and the
        seconds the writer was held."""
        for attempt in range(PIN_TRIES):
            async with self._writing():
                t0 = monotonic()
                await self._flush_locked()
                if not self._events or attempt == PIN_TRIES - 1:
                    conn, seq = pin_file(self.path)
                    return conn, seq, monotonic() - t0
            # Events published while the audit trail was written (an order's, after its journal entry was
            # committed) are not in the database yet: their turn in the trail first, then pin.
        raise AssertionError("unreachable")

    async def last_seq(self) -> int:
        cur = await self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events")
        (seq,) = await cur.fetchone()
        return int(seq)

    async def last_run_phase(self) -> str | None:
        """The phase of the newest `run` record (start or stop); None when there is none (a first start)."""
        cur = await self.conn.execute("SELECT seq, data FROM events WHERE event = 'run' ORDER BY seq DESC LIMIT 1")
        row = await cur.fetchone()
        if row is None:
            return None
        try:
            phase = json.loads(event_line(self.path, row[0], row[1])).get("phase")
        except (ValueError, AttributeError):
            return None
        return phase if isinstance(phase, str) else None

    async def chain_head(self) -> ChainHead | None:
        """The audit chain's head as stored (seq and hash of the last record written); for a database written
        before the head was stored, the hash of its last event record. None when there are no records."""
        value = await self.get_kv(HEAD_KEY)
        head = chain_head_of(value)
        if head is not None:
            return head
        cur = await self.conn.execute("SELECT seq, data FROM events ORDER BY seq DESC LIMIT 1")
        row = await cur.fetchone()
        return ChainHead(int(row[0]), line_hash(event_line(self.path, row[0], row[1]))) if row else None

    # ---------------------------------------------------------------- orders and fills
    async def journal_order(self, o: Order, intent: dict[str, Any] | None = None,
                            publish: Callable[[], object] | None = None) -> None:
        """Record an order before it is sent: after a crash the journal says it may exist at the venue. With
        `publish`, which publishes the event that says the order is new, that event in the same transaction (held
        from other writers until then, as update_order's): a crash leaves both or neither, never an order whose
        records do not say it began."""
        params = _journal_row(o, intent)
        if publish is None:
            await self._write(_SQL_JOURNAL_ORDER, params)
            return
        async with self._with_events_of(publish):
            await self.conn.execute(_SQL_JOURNAL_ORDER, params)

    async def order_intents(self, client_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not client_order_ids:
            return {}
        marks = ",".join("?" * len(client_order_ids))
        cur = await self.conn.execute(f"SELECT client_order_id, intent FROM orders WHERE client_order_id IN ({marks})",
                                      client_order_ids)
        return {r[0]: self._loads(r[1], f"table orders, order {r[0]}", "intent") for r in await cur.fetchall()}

    async def update_order(self, o: Order, kv: dict[str, Any] | None = None,
                           publish: Callable[[], object] | None = None) -> None:
        """An order's new state, with `kv` (book state the same change altered, e.g. the paper venue's book) in
        the same transaction; with `publish`, which publishes the event that says it, that event too (held from
        other writers until then, as a fill's: add_fill), so that a crash leaves both or neither."""
        if publish is not None:
            async with self._with_events_of(publish):
                await self._write_order_state(o, kv)
            return
        if not kv:
            await self._write(_SQL_ORDER_STATE, _order_state(o))
            return
        async with self._writing():
            if not self.batch:
                await self._flush_locked()
            async with self._tx():
                await self._write_order_state(o, kv)

    async def _write_order_state(self, o: Order, kv: dict[str, Any] | None) -> None:
        await self.conn.execute(_SQL_ORDER_STATE, _order_state(o))
        for key, value in (kv or {}).items():
            await self.conn.execute(_SQL_KV, (key, _dumps(value), o.updated_ts / 1000.0))

    def _events_held(self) -> _EventsHeld:
        """Records published inside it (a fill's or an order's events) are held from other writers (an operator's
        pause, the periodic flush: they write only the events before them) until `_tx_with_held_events` writes
        them in the transaction of what they say. One such record at a time."""
        return _EventsHeld(self)

    def _tx_with_held_events(self) -> _TxWithHeldEvents:
        """A transaction of its own that first writes the events held by `_events_held`, with those before them."""
        return _TxWithHeldEvents(self)

    def _with_events_of(self, publish: Callable[[], object]) -> _WithEventsOf:
        """A transaction of its own with the events `publish()` publishes (and those before them), held from other
        writers until it: a crash leaves what it writes and the events that say it both, or neither."""
        return _WithEventsOf(self, publish)

    def _order_from_row(self, r: tuple[Any, ...]) -> Order:  # the columns of _SQL_ORDERS, in order
        where = f"table orders, order {r[0]}"
        return Order(client_order_id=r[0], decision_id=r[1], venue=r[2], symbol=r[3],
                     side=self._known(Side, r[4], where, "side", "a side"), type=r[5], quantity=r[6], price=r[7],
                     reduce_only=bool(r[8]), reason=self._known(OrderReason, r[9], where, "reason", "an order reason"),
                     status=self._known(OrderStatus, r[10], where, "status", "an order status"), filled=r[11],
                     average=r[12], fee=r[13], exchange_id=r[14], created_ts=r[15], updated_ts=r[16], error=r[17],
                     fee_base=r[18], fee_base_value=r[19])

    async def live_orders(self) -> list[Order]:
        """Orders that are not final: new (journaled, maybe sent), in doubt, or open."""
        cur = await self.conn.execute(_SQL_ORDERS + " WHERE status IN ('new', 'in_doubt', 'open') "
                                      "ORDER BY created_ts, rowid")
        return [self._order_from_row(tuple(r)) for r in await cur.fetchall()]

    async def order(self, client_order_id: str) -> Order | None:
        """The journal's order of that client order id, or None."""
        cur = await self.conn.execute(_SQL_ORDERS + " WHERE client_order_id = ?", (client_order_id,))
        r = await cur.fetchone()
        return self._order_from_row(tuple(r)) if r is not None else None

    async def orders(self) -> list[Order]:
        """Every order in the journal, oldest first."""
        cur = await self.conn.execute(_SQL_ORDERS + " ORDER BY created_ts, rowid")
        return [self._order_from_row(tuple(r)) for r in await cur.fetchall()]

    async def quotes_traded(self) -> list[str]:
        """The quote currencies of the symbols the journal's orders and the positions are in (config.py: every
        symbol is quoted in venue.quote), sorted."""
        rows = await self.query("SELECT symbol FROM orders UNION SELECT symbol FROM positions")
        return sorted({str(r[0]).partition("/")[2] for r in rows})

    async def entry_times_since(self, since_ms: int) -> list[int]:
        """When each entry (an order that is not reduce-only) journaled after since_ms was made, oldest first."""
        rows = await self.query("SELECT created_ts FROM orders WHERE reduce_only = 0 AND created_ts > ? "
                                "ORDER BY created_ts", (since_ms,))
        return [r[0] for r in rows]

    async def entries_since(self, since_ms: int) -> list[tuple[int, int | None]]:
        """The entries DAILY_TRADES counts journaled since since_ms: orders not reduce-only, from a signal or the
        operator, or recovered after a restore, not refused with nothing filled (an entry the venue refused was not
        made; one it ended rejected after a fill bought coins); each as (journal time, the UTC day it counted in, or
        None where the journal does not say it)."""
        rows = await self.query("SELECT created_ts, json_extract(intent, '$.entry_day') FROM orders WHERE "
                                "reduce_only = 0 AND reason IN (?, ?, ?) AND (status != ? OR filled > 0) AND "
                                "created_ts >= ?",
                                (OrderReason.SIGNAL.value, OrderReason.OPERATOR.value, OrderReason.RECONCILE.value,
                                 OrderStatus.REJECTED.value, since_ms))
        return [(int(r[0]), r[1] if isinstance(r[1], int) else None) for r in rows]

    async def market_time(self, timeframe_ms: int) -> int | None:
        """The latest time the engine's clock reached by the records, or None: where a market made or replayed in the
        process goes on from at the earliest. One unit, the clock's: the orders', fills', trades' and positions'
        stamps are clock times, and the last bar decided (its open time) says the clock stood at its close, the open
        plus `timeframe_ms` (the timeframe it was decided on). The decisions' last row only: a symbol's bars are
        decided in time order (`ffe doctor` fails them otherwise), and the table is the largest."""
        rows = await self.query(_SQL_MARKET_TIME, (timeframe_ms,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def stamped_time(self) -> int | None:
        """The latest time the engine's clock stamped on the books (an order, a fill, a trade, a position), or None:
        where a clock read off the system's goes on from (clock.SteadyClock). The candles' times are left out: on an
        exchange's market they are the exchange's clock."""
        rows = await self.query(_SQL_STAMPED_TIME)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def candles_done(self, symbols: Iterable[str], timeframe_ms: int) -> dict[str, int]:
        """Symbol -> the close of its latest candle the records say was decided (as market_time, a clock time; the
        last bar decided counts at its open plus `timeframe_ms`): its decision, or an order its decision made (an
        older release committed the decision after it). What a restart must not hand out again, whatever the saved
        market says: the engine commits an order before it stores the market's place. A candle that only filled
        orders, or placed a stop-loss or take-profit before its decision, is handed out again and decided (the
        paper venue fills no order at the open of the candle it was placed on)."""
        done = {str(r[0]): int(r[1]) for r in await self.query(_SQL_CANDLE_STAMPS) if r[1] is not None}
        for sym in symbols:
            rows = await self.query(_SQL_LAST_DECIDED, (sym,))
            if rows:
                done[sym] = max(done.get(sym, 0), int(rows[0][0]) + timeframe_ms)
        return done

    async def first_event_ts(self) -> float | None:
        """When the records begin (the first event's wall time, seconds): the account's first start."""
        cur = await self.conn.execute("SELECT ts FROM events ORDER BY seq LIMIT 1")
        row = await cur.fetchone()
        return float(row[0]) if row is not None else None

    async def order_ids_on(self, venue: str) -> set[str]:
        """The client order ids the journal has for a venue."""
        cur = await self.conn.execute("SELECT client_order_id FROM orders WHERE venue = ?", (venue,))
        return {r[0] for r in await cur.fetchall()}

    async def cash_flows(self) -> dict[str, tuple[float, float]]:
        """Per side (buy, sell): the fills' total notional and the fees paid in cash (a fee taken in coins is
        not), with every row written so far."""
        rows = await self.query("SELECT side, SUM(quantity * price), SUM(fee - fee_base_value) FROM fills "
                                "GROUP BY side")
        return {r[0]: (r[1] or 0.0, r[2] or 0.0) for r in rows}

    async def decision_votes(self, decision_id: str) -> dict[str, str]:
        """provider -> action of the votes a decision recorded, HOLDs included (a failed provider cast none): from its
        `decision` event, as the engine held them when it decided (the feedback loop counts a provider's HOLDs too);
        where that record is not at hand (a backtest's compact records), the directional votes the votes table
        indexes."""
        rows = await self.query("SELECT e.data FROM decisions d JOIN events e ON e.seq = d.event_seq "
                                "WHERE d.decision_id = ?", (decision_id,))
        if rows and not compact.is_compact(rows[0][0]):
            record = self._loads(rows[0][0], f"table events, decision {decision_id}", "data")
            votes = record.get("votes") if isinstance(record, dict) else None
            if isinstance(votes, list) and all(isinstance(v, dict) and {"provider", "action"} <= v.keys()
                                               for v in votes):
                return {str(v["provider"]): str(v["action"]) for v in votes}
        rows = await self.query("SELECT provider, action FROM votes WHERE decision_id = ? AND failed = 0",
                                (decision_id,))
        return {r[0]: r[1] for r in rows}

    async def add_fill(self, f: Fill, order: Order, record: "FillRecord | None" = None,
                       publish: Callable[[], object] | None = None, journal: dict[str, Any] | None = None) -> None:
        """A fill, its order's new cumulative state and what the fill changed in the book (position, closed
        trade, book state), in one transaction with the events buffered so far, the fill's and the order's own
        events among them (`publish()` publishes them; they reach the audit trail first): after a crash either all
        of it is recorded or none. Fills are recorded one at a time. From the fill's event until its commit, another
        writer that takes the lock first (an operator's pause, the periodic flush) writes only the events before
        it: a fill's event is never committed without its fill, where a kill would leave it so and the restarted
        engine record the fill with a second event. With `journal` (its intent), the order is journaled by the same
        transaction, in its final state: an order that was never to be sent (a sale made by hand), which a crash
        must not leave journaled as new, for a restart to send."""
        async with self._events_held():
            if record is not None and record.trade is not None:
                # The id is assigned here, not by SQLite (a backtest's writer runs in another process), and before
                # the events: the trade's own names it.
                self._last_trade_id += 1
                record.trade.trade_id = self._last_trade_id
            if publish is not None:
                publish()
            if record is not None and record.announce is not None:
                record.announce()
            try:
                await self._add_fill(f, order, record, journal)
            except BaseException:
                self._books_ahead = True
                raise

    async def _add_fill(self, f: Fill, order: Order, record: "FillRecord | None",
                        journal: dict[str, Any] | None) -> None:
        c = self.conn
        async with self._tx_with_held_events():
            if journal is not None:
                await c.execute(_SQL_JOURNAL_ORDER, _journal_row(order, journal))
            await c.execute("INSERT INTO fills (client_order_id, symbol, side, quantity, price, fee, ts, fee_base, "
                            "fee_base_value) VALUES (?,?,?,?,?,?,?,?,?)",
                            (f.client_order_id, f.symbol, f.side.value, f.quantity, f.price, f.fee, f.ts,
                             f.fee_base, f.fee_base_value))
            if journal is None:
                await c.execute(_SQL_ORDER_STATE, _order_state(order))
            if record is None:
                return
            if record.position is not None:
                await c.execute(_SQL_POSITION, _position_row(record.position))
            elif record.closed_symbol is not None:
                await c.execute("DELETE FROM positions WHERE symbol = ?", (record.closed_symbol,))
            if record.trade is not None:
                await c.execute(_SQL_TRADE, _trade_row(record.trade))
                if record.scores:
                    await c.executemany(_SQL_SCORE, [(record.trade.trade_id, p, a, 1 if ok else 0, r)
                                                     for p, a, ok, r in record.scores])
            for key, value in record.kv.items():
                await c.execute(_SQL_KV, (key, _dumps(value), record.wall))

    # ---------------------------------------------------------------- positions and trades
    async def put_position(self, p: Position, values: dict[str, Any], ts: float) -> None:
        """A held position's row written again (the levels it was given), with the keys `values` in the same
        transaction."""
        rows = [(key, _dumps(value), ts) for key, value in values.items()]
        async with self._writing():
            self._refuse_books_ahead()
            async with self._tx():
                await self._write_buffers()
                await self.conn.execute(_SQL_POSITION, _position_row(p))
                await self._put_rows(rows, [])

    async def parts_sold(self, decision_id: str, opened_ts: int) -> tuple[float, float] | None:
        """The P&L and entry cost of the parts of a position (its entry's decision, its opening time) closed so far;
        None when none was."""
        rows = await self.query("SELECT COUNT(*), SUM(pnl), SUM(entry_price * quantity) FROM trades "
                                "WHERE entry_decision_id = ? AND opened_ts = ?", (decision_id, opened_ts))
        count, pnl, cost = rows[0]
        return (float(pnl), float(cost)) if count else None

    async def positions(self) -> list[Position]:
        cur = await self.conn.execute("SELECT symbol, side, quantity, entry_price, opened_ts, stop_loss, take_profit, "
                                      "entry_decision_id, fees FROM positions ORDER BY symbol")
        return [Position(symbol=r[0], side=self._known(Side, r[1], f"table positions, position {r[0]}", "side",
                                                       "a side"),
                         quantity=r[2], entry_price=r[3], opened_ts=r[4], stop_loss=r[5], take_profit=r[6],
                         entry_decision_id=r[7], fees=r[8])
                for r in await cur.fetchall()]

    # ---------------------------------------------------------------- approvals
    async def save_approval(self, row: dict[str, Any], publish: Callable[[], object] | None = None) -> None:
        """With `publish`, the events it publishes (the decision a new approval is for, the `approval` event that
        says its status) in the same transaction: a kill leaves the approval and its records both or neither.
        A pending approval is a new one, written once; any other status ends it, and only a pending one can end: a
        final status never changes, whoever asks (ControlError, before `publish` is called: nothing says it)."""
        aid, status = row["approval_id"], row["status"]
        params: tuple[Any, ...]
        if status == APPROVAL_PENDING:
            sql, params = _SQL_NEW_APPROVAL, (
                aid, row["decision_id"], row["symbol"], row["side"], row["quantity"], row["price"],
                row["created_ts"], row["expires_ts"], status, row.get("by"), row.get("ended_ts"),
                _dumps(row["intent"]), _dumps(row["gates"]), row.get("client_order_id"))
        else:
            sql, params = _SQL_END_APPROVAL, (status, row.get("by"), row.get("ended_ts"), row.get("client_order_id"),
                                              aid)
        # Under the fill turn, which every approval's write takes: the status read here is the one the write finds.
        async with self._events_held():
            cur = await self.conn.execute("SELECT status, by FROM approvals WHERE approval_id = ?", (aid,))
            found = await cur.fetchone()
            if found is not None and found[0] != APPROVAL_PENDING:
                raise ControlError(f"approval {aid} ended {found[0]} (by {found[1]}) already: not recorded {status}; "
                                   "a final status never changes")
            if (found is None) != (status == APPROVAL_PENDING):
                raise ControlError(f"approval {aid} is {'not recorded' if found is None else 'pending already'}: "
                                   f"not recorded {status}")
            if publish is not None:
                publish()
            async with self._tx_with_held_events():
                await self.conn.execute(sql, params)
                changed = await self.conn.execute("SELECT changes()")
                if (await changed.fetchone() or (0,))[0] != 1:  # (a writer other than the engine, meanwhile)
                    raise ControlError(f"approval {aid} changed meanwhile: not recorded {status}")

    async def entry_order_of(self, decision_id: str) -> str | None:
        """The client order id of the entry journaled for a decision, if any (the oldest)."""
        cur = await self.conn.execute("SELECT client_order_id FROM orders WHERE decision_id = ? AND reduce_only = 0 "
                                      "ORDER BY created_ts LIMIT 1", (decision_id,))
        row = await cur.fetchone()
        return str(row[0]) if row else None

    async def approval_end(self, approval_id: str) -> tuple[str, str, float | None] | None:
        """(status, by, ended_ts) of an approval that has ended; None for one that is pending or unknown."""
        cur = await self.conn.execute("SELECT status, by, ended_ts FROM approvals WHERE approval_id = ? AND status "
                                      "!= 'pending'", (approval_id,))
        row = await cur.fetchone()
        return (str(row[0]), str(row[1]), row[2]) if row else None

    async def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT " + _APPROVAL_COLUMNS + " FROM approvals" + (" WHERE status = ?" if status else "")
               + " ORDER BY created_ts")
        cur = await self.conn.execute(sql, (status,) if status else ())
        cols = [d[0] for d in cur.description]
        out = []
        for r in await cur.fetchall():
            row = dict(zip(cols, r))
            where = f"table approvals, approval {row['approval_id']}"
            row["intent"] = self._loads(row["intent"], where, "intent")
            row["gates"] = self._loads(row["gates"], where, "gates")
            out.append(row)
        return out

    # ---------------------------------------------------------------- the alerts' outbox
    def add_alert(self, channel: str, key: str, kind: str, severity: str, text: str, ts: float,
                  engine: str = "") -> None:
        """Buffered like the events: written by the next flush, in the same transaction as the event that raised
        the alert, so the alert is exactly as durable as that record (ahead of it only while the audit trail is
        stalled: the record waits for the audit trail, the alert about the stall must not). `engine`: the engine
        that raised it (host and data directory)."""
        self._alerts.append((channel, key, kind, severity, text, ts, engine))

    async def next_alert(self, channel: str, skip: Collection[int] = ()) -> dict[str, Any] | None:
        """The channel's oldest undelivered alert, but for those in `skip` (delivered, their mark not written), taken
        to be sent: trim_alerts spares it until alert_sent or alert_failed says its delivery is over. Read and taken
        under the lock the trim holds, so no trim falls between the two (the delivery resumes after the read at any
        time on a busy machine: an alert dropped meanwhile would be delivered all the same, and counted dropped)."""
        ids = sorted(skip)
        async with self._lock:
            cur = await self.conn.execute(
                f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alert_outbox WHERE channel = ? AND status = 'pending' "
                f"AND id NOT IN ({', '.join('?' * len(ids))}) ORDER BY id LIMIT 1", (channel, *ids))
            row = await cur.fetchone()
            if row is None:
                self._on_wire.pop(channel, None)
                return None
            self._on_wire[channel] = int(row[0])
        return dict(zip(_ALERT_COLUMNS, row))

    async def outbox_rows(self, ids: Collection[int]) -> list[dict[str, Any]]:
        """The outbox's rows of these ids (those still there), with their status."""
        wanted = sorted(ids)
        rows = await self.query(f"SELECT {', '.join(_ALERT_COLUMNS)}, status FROM alert_outbox WHERE id IN "
                                f"({', '.join('?' * len(wanted))})", tuple(wanted))
        return [dict(zip((*_ALERT_COLUMNS, "status"), row)) for row in rows]

    async def pending_alerts(self, channel: str) -> int:
        cur = await self.conn.execute("SELECT COUNT(*) FROM alert_outbox WHERE channel = ? AND status = 'pending'",
                                      (channel,))
        (n,) = await cur.fetchone()
        return int(n)

    async def alert_channels(self) -> list[str]:
        """The channels the outbox has alerts for, in any state: those the account has had."""
        cur = await self.conn.execute("SELECT DISTINCT channel FROM alert_outbox ORDER BY channel")
        return [str(row[0]) for row in await cur.fetchall()]

    async def recent_alerts(self, since_ts: float, engine: str = "") -> list[tuple[str, str, str, str, float]]:
        """The last alert of each key that `engine` raised since a time: key, kind, severity, text and when (the
        notifier's windows go on across a restart of the same engine), in the order they were raised."""
        # Not those a restore withheld: none of them was delivered from these records, and the restored start's
        # own alert must not be held back by one.
        rows = await self.query("SELECT key, kind, severity, text, created_ts FROM alert_outbox WHERE id IN "
                                "(SELECT MAX(id) FROM alert_outbox WHERE created_ts >= ? AND engine = ? AND status != "
                                "? GROUP BY key) ORDER BY id", (since_ts, engine, WITHHELD))
        return [(str(k), str(kind), str(sev), str(text), float(ts)) for k, kind, sev, text, ts in rows]

    async def alert_sent(self, alert_id: int, attempts: int, ts: float) -> None:
        try:
            await self._write("UPDATE alert_outbox SET status = 'sent', attempts = ?, sent_ts = ? WHERE id = ?",
                              (attempts, ts, alert_id), audit_first=False)
        finally:
            self._off_the_wire(alert_id)

    async def alert_failed(self, alert_id: int, attempts: int, error: str) -> None:
        try:
            await self._write("UPDATE alert_outbox SET attempts = ?, last_error = ? WHERE id = ?",
                              (attempts, error[:200], alert_id), audit_first=False)
        finally:
            self._off_the_wire(alert_id)

    def _off_the_wire(self, alert_id: int) -> None:
        """The delivery of an alert taken by next_alert is over: the trim may drop it again if it is pending."""
        for channel in [c for c, i in self._on_wire.items() if i == alert_id]:
            del self._on_wire[channel]

    async def trim_alerts(self, channel: str, keep: int) -> list[dict[str, Any]]:
        """Bound the outbox: beyond `keep` undelivered alerts, the least severe are marked dropped, the oldest of
        them first (a page goes only when `keep` pages are newer). The alert on the wire (taken by next_alert, its
        delivery not over) is never dropped; it counts toward `keep`. The alerts dropped (kind, severity, text,
        created_ts), oldest first."""
        async with self._lock:
            sparing = self._on_wire.get(channel)  # read under the lock next_alert takes it under
            await self._flush_locked()
            async with self._tx():
                cur = await self.conn.execute(
                    "SELECT id, kind, severity, text, created_ts FROM alert_outbox WHERE id IN (SELECT id FROM "
                    "alert_outbox WHERE channel = ? AND status = 'pending' AND id != ? ORDER BY CASE severity WHEN "
                    "'page' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END, id DESC LIMIT -1 OFFSET ?) ORDER BY id",
                    (channel, -1 if sparing is None else sparing, keep if sparing is None else max(0, keep - 1)))
                rows = await cur.fetchall()
                await self.conn.executemany("UPDATE alert_outbox SET status = 'dropped' WHERE id = ?",
                                            [(r[0],) for r in rows])
        return [{"kind": r[1], "severity": r[2], "text": r[3], "created_ts": r[4]} for r in rows]

    async def dropped_alerts(self, channel: str) -> int:
        """How many alerts the outbox has dropped for the channel, in every run."""
        cur = await self.conn.execute("SELECT COUNT(*) FROM alert_outbox WHERE channel = ? AND status = 'dropped'",
                                      (channel,))
        (n,) = await cur.fetchone()
        return int(n)

    async def untold_alerts(self, channel: str) -> list[tuple[int, str, float]]:
        """The alerts dropped for the channel that no delivered ALERTS_DROPPED notice has counted yet, in every run:
        (id, kind, created_ts), oldest first."""
        cur = await self.conn.execute(
            "SELECT id, kind, created_ts FROM alert_outbox WHERE channel = ? AND status = 'dropped' "
            "AND told_ts IS NULL ORDER BY id", (channel,))
        return [(int(i), str(kind), float(ts)) for i, kind, ts in await cur.fetchall()]

    async def alerts_told(self, ids: list[int], notice: tuple[str, str, str, str, str, float], ts: float) -> None:
        """A delivered ALERTS_DROPPED notice (channel, key, kind, severity, text, created_ts) and the dropped alerts
        it counted (`ids`), told at `ts`, in one transaction: the notice is kept as sent with what the operator was
        told, and the alerts it counted are never counted again."""
        async with self._writing(audit_first=False):
            await self._flush_locked()
            async with self._tx():
                await self.conn.executemany("UPDATE alert_outbox SET told_ts = ? WHERE id = ?",
                                            [(ts, i) for i in ids])
                await self.conn.execute(
                    "INSERT INTO alert_outbox (channel, key, kind, severity, text, created_ts, status, attempts, "
                    "sent_ts) VALUES (?,?,?,?,?,?,'sent',1,?)", (*notice, ts))

    # ---------------------------------------------------------------- reads for the operator's views
    async def trade_stats(self, by: str | None = None, limit: int = 12) -> list[dict[str, Any]]:
        """Closed trades summed: over all of them (by=None), per symbol (most profitable first), or per UTC day,
        week or month of their close (newest first). P&L is net of fees; durations are in market milliseconds."""
        if by is None:
            key, order = "'all'", "k"
        elif by == "symbol":
            key, order = "symbol", "SUM(pnl) DESC"
        elif by in PERIOD_KEYS:
            key, order = PERIOD_KEYS[by], "k DESC"
        else:
            raise ValueError(f"trade_stats: unknown grouping {by!r}")
        rows = await self.query(
            f"SELECT {key} AS k, COUNT(*), SUM(pnl > 0), SUM(pnl), SUM(fees), AVG(closed_ts - opened_ts), "
            f"MIN(pnl), MAX(pnl) FROM trades GROUP BY k ORDER BY {order} LIMIT ?", (limit,))
        return [{"key": r[0], "trades": r[1], "wins": r[2] or 0, "pnl": r[3] or 0.0, "fees": r[4] or 0.0,
                 "avg_duration_ms": r[5], "worst": r[6], "best": r[7]} for r in rows]

    async def refusals_since(self, ts_ms: int) -> list[tuple[str, str, int]]:
        """The strategy's orders refused, or held by a trade in their symbol waiting for approval, since a market
        time: (outcome, the reason up to its first colon, how many). A gate's refusal reads `CODE: value=...
        limit=...`, so the head is the gate's code. An order a decision made that the venue refused (it ended
        `rejected`, its error saying why) counts as the decision refused; so does a decision whose approval a gate
        refused when it was approved (its re-check's first failed gate, stored under the decision: the decision's
        own gates all passed, or it would not have waited for approval), at the decision's time."""
        rows = await self.query(
            "SELECT outcome, CASE WHEN instr(reason, ':') > 0 THEN substr(reason, 1, instr(reason, ':') - 1) "
            "ELSE reason END AS head, COUNT(*) FROM ("
            "SELECT outcome, reason FROM decisions WHERE ts >= ? AND outcome IN "
            "('rejected', 'refused', 'below_minimum', 'exit_refused', 'awaiting_approval') "
            "UNION ALL SELECT CASE d.outcome WHEN 'submitted' THEN 'refused' ELSE 'exit_refused' END, o.error "
            "FROM decisions d JOIN orders o ON o.client_order_id = d.client_order_id WHERE d.ts >= ? AND "
            "d.outcome IN ('submitted', 'exit_submitted') AND o.status = 'rejected' "
            "UNION ALL SELECT 'refused', (SELECT code FROM gate_results g WHERE g.decision_id = a.decision_id AND "
            "g.passed = 0 ORDER BY g.rowid LIMIT 1) AS code FROM approvals a JOIN decisions d ON d.decision_id = "
            "a.decision_id WHERE d.ts >= ? AND a.status = 'rejected' AND code IS NOT NULL) GROUP BY outcome, head",
            (ts_ms, ts_ms, ts_ms))
        return [(r[0], r[1], r[2]) for r in rows]

    async def last_entry_ts(self) -> int | None:
        """The market time of the strategy's last entry sent to the venue: sent by its decision, or later by an
        approval (an order's creation time is market time)."""
        rows = await self.query("SELECT MAX(created_ts) FROM orders WHERE reduce_only = 0 AND reason = 'signal'")
        return rows[0][0] if rows else None

    # ---------------------------------------------------------------- reads for reports
    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A read that sees everything recorded so far, buffered rows included (after a write failed: the records
        as they are, since nothing buffered is written any more)."""
        if self.failed is not None:
            async with self._lock:
                cur = await self.conn.execute(sql, params)
                return list(await cur.fetchall())
        async with self._writing():
            if self.batch:
                await self._write_buffers()
            else:
                await self._flush_locked()
            cur = await self.conn.execute(sql, params)
            return list(await cur.fetchall())


# ==================================================================== backups
RESTORED_KEY = "restored_from_backup"  # set by `ffe restore`, cleared once the venue's later orders are recovered
# Set by `ffe restore` (withhold_pending_alerts), cleared once the restored start's alert has said it.
RESTORE_ALERTS_KEY = "restore_withheld_alerts"
# kv: what accepted reconciliations added to a paper account's cash beyond what its fills make it (the simulated
# exchange's figure taken as it was): counted with the fills wherever cash is rebuilt from them.
CASH_ACCEPTED_KEY = "cash_accepted"
# kv: the currency the books keep their cash in (venue.quote at the account's first start)
BOOKS_QUOTE_KEY = "books_quote"


# The store's scopes (`async with store._writing()` and the rest) as plain objects rather than generator-based
# context managers: the order path enters three or four of them per write, and an async generator costs far more
# to enter and leave than a lock (asyncio tracks each one it starts), which made them most of an order's cost in a
# backtest. Each does what the `async with` blocks it stands for did, nested in the same order.
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def _exc_info(exc: BaseException) -> ExcInfo:
    return type(exc), exc, exc.__traceback__


class _Writing:
    """Store._writing: the audit trail first (if asked), then the writer's lock; a write the disk refuses becomes a
    StorageError naming the database."""

    __slots__ = ("store", "audit_first")

    def __init__(self, store: Store, audit_first: bool) -> None:
        self.store = store
        self.audit_first = audit_first

    async def __aenter__(self) -> None:
        store = self.store
        if store.failed is not None:
            raise store.failed
        if self.audit_first and store._events and store._before_events is not None:
            try:
                await store._before_events()
            except StorageError as exc:
                store.failed = exc
                raise
        await store._lock.acquire()
        if store.failed is not None:
            # The write before this one, which held the lock, failed: its events are not written, and this one's
            # later events, committed, would leave a hole in the records no start takes.
            store._lock.release()
            raise store.failed
        try:
            store._check_not_written_over()
        except DamagedDatabase as exc:  # nothing more is written: the engine stops on it
            store.failed = exc
            store._lock.release()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        store = self.store
        store._seen_after_write()  # before another process may cut the file back below what this write left
        store._lock.release()
        if isinstance(exc, sqlite3.OperationalError) and _is_write_failure(exc):
            store.failed = storage_failure(store.path, exc)
            raise store.failed from None
        if isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", "").startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            # Damaged under the engine (a file written over it): nothing more is written; the engine stops on it.
            store.failed = damaged_database(store.path, f"{exc}, met while the engine ran")
            raise store.failed from None
        if isinstance(exc, WriterError):  # a backtest's writer process: a failed write, or the process gone
            store.failed = exc


class _Tx:
    """Store._tx: BEGIN, then COMMIT (ROLLBACK on any exception, or when the COMMIT fails); nothing in batch mode,
    where the writes are part of the open transaction."""

    __slots__ = ("store", "own")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.own = False

    async def __aenter__(self) -> None:
        store = self.store
        if store.batch:
            return
        await store.conn.execute("BEGIN")
        self.own = True
        store._writing_seq = 0

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self.own:
            return
        store = self.store
        if exc is not None:
            await store.conn.execute("ROLLBACK")
            return
        try:
            await store.conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may leave the transaction open
                await store.conn.execute("ROLLBACK")
            raise
        store.committed_seq = max(store.committed_seq, store._writing_seq)


class _EventsHeld:
    """Store._events_held: the fill turn, and the events from here on held from other writers until it ends."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __aenter__(self) -> None:
        store = self.store
        await store._fill_turn.acquire()
        store._held_after = store._last_seq

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        store = self.store
        store._held_after = None
        store._fill_turn.release()


class _TxWithHeldEvents:
    """Store._tx_with_held_events: `_writing()`, inside it `_tx()`, inside that the held events written first."""

    __slots__ = ("store", "writing", "tx")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writing = _Writing(store, True)
        self.tx = _Tx(store)

    async def __aenter__(self) -> None:
        await self.writing.__aenter__()
        try:
            await self.tx.__aenter__()
        except BaseException as exc:
            await self.writing.__aexit__(*_exc_info(exc))
            raise
        store = self.store
        try:
            store._held_after = None  # its own events are written now, in its transaction
            if not store.batch:
                await store._write_buffers()
        except BaseException as exc:
            await self.__aexit__(*_exc_info(exc))
            raise

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.tx.__aexit__(kind, exc, tb)
        except BaseException as failed:  # the COMMIT or ROLLBACK: what the writer's scope sees
            await self.writing.__aexit__(*_exc_info(failed))
            raise
        await self.writing.__aexit__(kind, exc, tb)


class _WithEventsOf:
    """Store._with_events_of: `_events_held()`, inside it `publish()` and `_tx_with_held_events()`."""

    __slots__ = ("held", "publish", "tx")

    def __init__(self, store: Store, publish: Callable[[], object]) -> None:
        self.held = _EventsHeld(store)
        self.publish = publish
        self.tx = _TxWithHeldEvents(store)

    async def __aenter__(self) -> None:
        await self.held.__aenter__()
        try:
            self.publish()
            await self.tx.__aenter__()
        except BaseException as exc:
            await self.held.__aexit__(*_exc_info(exc))
            raise

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.tx.__aexit__(kind, exc, tb)
        finally:
            await self.held.__aexit__(kind, exc, tb)


@dataclass(frozen=True)
class DatabaseFacts:
    """What a copied database holds, for a backup's manifest."""

    schema_version: int
    first_seq: int
    last_seq: int
    rows: dict[str, int]
    engine_state: tuple[Any, ...] | None = None  # (state, reason, by)
    kv: dict[str, Any] = field(default_factory=dict)  # the keys asked for that it holds


def pin_file(path: Path | str, read_only: bool = False) -> tuple[sqlite3.Connection, int]:
    """A connection to the database at `path` with a read transaction open (its view fixed from here on), and the
    last event's seq in that view. The connection may be used from another thread. `read_only`: opened as the
    checks open it (open_read_only), which reads it on a directory that cannot be written too (no engine runs on
    it: the caller holds its lock)."""
    try:
        conn = (open_read_only(path) if read_only
                else sqlite3.connect(str(path), isolation_level=None, check_same_thread=False))
    except sqlite3.DatabaseError as exc:
        raise cannot_read_database(path, exc) from None
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN")
        row = conn.execute("SELECT seq FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"{path}: cannot read the database ({exc})") from None
    return conn, int(row[0]) if row else 0


def copy_pinned(conn: sqlite3.Connection, dest: Path, keys: Iterable[str] = ()) -> DatabaseFacts:
    """Copy a pinned view (pin_file) to a new single-file database at `dest` with SQLite's online backup, in one
    step (so within the one read transaction), then close the pinned connection. The facts include the engine's
    state and the kv records of `keys` the copy holds."""
    source: Any = "the database copied"
    try:
        source = conn.execute("PRAGMA database_list").fetchone()[2]  # its file
        target = sqlite3.connect(str(dest), isolation_level=None)
        try:
            conn.backup(target)
            # One self-contained file: no -wal beside it (the engine puts WAL back when it opens the database).
            target.execute("PRAGMA journal_mode=DELETE")
            (version,) = target.execute("PRAGMA user_version").fetchone()
            first, last = target.execute("SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM events").fetchone()
            rows = {name: int(target.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])
                    for (name,) in target.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                                                  "LIKE 'sqlite_%' ORDER BY name").fetchall()}
            state = target.execute("SELECT state, reason, by FROM engine_state WHERE id = 1").fetchone()
            kv = {}
            for key in keys:
                row = target.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                with contextlib.suppress(ValueError):
                    kv.update({key: json.loads(row[0])} if row is not None else {})
        finally:
            target.close()
    except sqlite3.OperationalError as exc:
        raise StorageError(f"{dest}: the database copy failed ({exc})") from None
    except sqlite3.DatabaseError as exc:  # the pages were copied as they are: the damage is the source's
        raise damaged_database(source, str(exc)) from None
    finally:
        conn.close()
    return DatabaseFacts(schema_version=int(version), first_seq=int(first), last_seq=int(last), rows=rows,
                         engine_state=tuple(state) if state is not None else None, kv=kv)


def mark_restored(path: Path | str, marker: dict[str, Any], ts: float) -> None:
    """Record in a restored database that it came from a backup: the next start recovers from the venue what the
    account did after the backup was taken (recovery.py), before any order."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute(_SQL_KV, (RESTORED_KEY, _dumps(marker), ts))
    finally:
        conn.close()


def withhold_pending_alerts(path: Path | str, reason: str, restore: dict[str, Any],
                            ts: float) -> tuple[dict[str, int], list[str]]:
    """In a restored database, by `restore`: the alerts its backup held pending are marked withheld, `reason` in
    their last_error, so the restored start does not deliver them again (the engine the backup was taken from may
    have delivered them). What they were is stored for the restored start's own alert to name (RESTORE_ALERTS_KEY:
    `restore`, which backup, with the kinds and counts and the kinds that were pages): a page nobody delivered is
    not lost. How many alerts of each kind, one for all its channels' rows, in the order they were raised, and the
    kinds among them that were pages."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        kinds: list[tuple[str, int]] = []
        pages: list[tuple[str]] = []
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_outbox'").fetchone():
            kinds = conn.execute("SELECT kind, COUNT(*) FROM (SELECT DISTINCT key, kind, text, created_ts FROM "
                                 "alert_outbox WHERE status = 'pending') GROUP BY kind "
                                 "ORDER BY MIN(created_ts)").fetchall()
            pages = conn.execute("SELECT kind FROM alert_outbox WHERE status = 'pending' AND severity = 'page' "
                                 "GROUP BY kind ORDER BY MIN(created_ts)").fetchall()
            conn.execute("UPDATE alert_outbox SET status = ?, last_error = ? WHERE status = 'pending'",
                         (WITHHELD, reason))
        # (a backup from before the outbox has none to withhold, but its restored start still says it is one)
        withheld = {str(kind): int(n) for kind, n in kinds}
        paged = [str(kind) for (kind,) in pages]
        conn.execute(_SQL_KV, (RESTORE_ALERTS_KEY, _dumps({**restore, "alerts": withheld, "pages": paged}), ts))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return withheld, paged


def halted_in(path: Path | str, *, strict: bool = False) -> tuple[str, str] | None:
    """The reason and author of the HALTED state stored in the database at `path`, or None when it is not HALTED
    or cannot be read (a restore replacing a lost or damaged database has no state to keep); with `strict`, a
    database that cannot be read is a StorageError instead."""
    try:
        # Not peeked: a restore moves the files beside it aside with it, and keeps a halt it can still read.
        conn = open_read_only(path, peek=False)
    except (sqlite3.Error, OSError) as exc:
        if strict:
            raise StorageError(f"{path}: cannot be read ({exc})") from None
        return None
    try:
        if strict:
            refuse_foreign(path, conn)
        row = conn.execute("SELECT state, reason, by FROM engine_state").fetchone()
        if row is not None and row[0] == EngineState.HALTED.value:
            return str(row[1]), str(row[2])
        # The row edited or deleted by hand (a start refuses it): the state the records last said is the account's.
        said = _last_state_event(Path(path), lambda sql, params: conn.execute(sql, params).fetchall(),
                                 functools.partial(event_line, path)) if strict else None
    except sqlite3.Error as exc:
        if strict:
            raise StorageError(f"{path}: cannot be read ({exc})") from None
        return None
    finally:
        conn.close()
    if said is not None and said.get("state") == EngineState.HALTED.value:
        return str(said.get("reason")), str(said.get("by"))
    return None


def events_end(path: Path | str) -> int:
    """The seq of the last event the database at `path` holds (0 for none); StorageError when it cannot be read."""
    try:
        conn = open_read_only(path, peek=False)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    try:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    finally:
        conn.close()


# Who stores PAUSED on the engine's own (a risk limit, the breaker, reconciliation, a live start): any other `by` is
# an operator's (the console's `operator`, `ffe ctl`'s `ctl` or its --by, a restore that kept one).
ENGINE_AUTHORS = frozenset({"engine", "risk", "breaker", "reconcile"})


MODE_REASONS = {"approval mode manual": True, "approval mode auto": False}  # the engine_state records of `ffe ctl mode`


def operator_stops(states: Iterable[dict[str, Any]]) -> tuple[str | None, bool]:
    """The operator's stops short of HALTED that `engine_state` records (in seq order) end in: the reason (and who)
    of the operator's last PAUSED that the engine has not run since (a pause the engine set on its own after it, a
    risk limit, records found lost, does not lift it; a resume or a re-arm does), and whether they end in manual
    approval."""
    paused, manual = None, False
    for rec in states:
        reason, by, state = str(rec.get("reason", "")), str(rec.get("by", "")), rec.get("state")
        if reason in MODE_REASONS:  # a change of mode, in whatever state the engine was
            manual = MODE_REASONS[reason]
        elif state == EngineState.PAUSED.value and by not in ENGINE_AUTHORS:
            paused = f"{reason} (by {by})"
        elif state == EngineState.RUNNING.value:
            paused = None
    return paused, manual


def stops_in(path: Path | str) -> tuple[str | None, bool]:
    """The operator's stops short of HALTED a database holds, read-only: the reason (and who) of an operator's PAUSED
    (None when not so paused), and whether manual approval is set (`ffe ctl mode manual`). Each is read from the
    stored row and from the events that recorded the states (operator_stops), the stricter taken: a row edited or
    lost by hand, or written over by a pause of the engine's own, does not lose it. StorageError when it cannot be
    read."""
    try:
        conn = open_read_only(path, peek=False)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    try:
        row = conn.execute("SELECT state, reason, by FROM engine_state").fetchone()
        states = []
        for seq, data in conn.execute("SELECT seq, data FROM events WHERE event = 'engine_state' ORDER BY seq"):
            rec = _record_read(Path(path), seq, data, functools.partial(event_line, path))
            if isinstance(rec, dict):
                states.append(rec)
        kept = conn.execute("SELECT value FROM kv WHERE key = 'approval_mode'").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot be read ({exc})") from None
    finally:
        conn.close()
    paused, manual = operator_stops(states)
    if row is not None and row[0] == EngineState.PAUSED.value and row[2] not in ENGINE_AUTHORS:
        paused = paused or f"{row[1]} (by {row[2]})"
    manual = manual or (kept is not None and kept[0] == json.dumps("manual"))
    return paused, manual


def keep_state(path: Path | str, state: EngineState, reason: str, ts: float) -> None:
    """Store `state` in a restored database, by `restore`: the kill switch (HALTED) or the operator's stops
    (PAUSED) of the records it replaced, without its event (state_unsaid_why)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute(_SQL_STATE, (state.value, reason, "restore", ts))
    finally:
        conn.close()


# ==================================================================== read-only: the checks of `ffe doctor`
def open_read_only(path: Path | str, timeout: float = 5.0, *, peek: bool = True) -> sqlite3.Connection:
    """The database at `path` for reading only: never written, never created. Its first read is made here, so a
    file that cannot be read raises sqlite3.DatabaseError now. `timeout`: how long a read waits for a lock. `peek`:
    a WAL database with nothing beside it (as a clean stop leaves it) is quick-checked as it is first, and a damaged
    one raises then, before the usual open makes -wal and -shm files beside it: it is left as it is."""
    path = Path(path)
    problem = wal_without_database(path)
    if problem is not None:  # SQLite would delete that WAL, read-only too
        raise sqlite3.DatabaseError(problem)
    journal = hot_journal(path)
    if journal is not None:  # which only a connection that may write can roll back: said as what it is, no damage
        raise sqlite3.OperationalError(f"{journal.name} beside it holds a transaction that never committed (a "
                                       "start killed in its first moments): the next start rolls it back")
    if peek and _in_wal_mode(path):
        problems = _damage_as_is(path)
        if problems is not None and problems != ["ok"]:
            raise sqlite3.DatabaseError(first_problem(problems))
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=timeout, check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.parent, os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            raise
    # A WAL database is read through its -shm file, which the readers share with the writer so that a reader
    # beside a running engine sees one consistent view; SQLite creates it beside the database when it is missing,
    # as it is after a clean stop. On a directory that cannot be written (a disk remounted read-only after errors)
    # it cannot: the database is then opened immutable, without the -shm and without locks. That is safe only
    # because nobody can write the file there either: an engine must create those files to write it at all.
    # Immutable skips the -wal file, though: records a killed engine left in one are read only with its -shm.
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise sqlite3.OperationalError(f"its directory cannot be written and {wal.name} holds records, which are "
                                       f"read only with the {path.name}-shm file that cannot be created there: copy "
                                       "the data directory to a writable place and read the copy")
    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, timeout=timeout,
                           check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn


class Records:
    """A data directory's database opened read-only, every read inside one transaction (one consistent view,
    even beside a running engine: WAL)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        problem = wal_without_database(self.path)
        if problem is not None:
            raise damaged_database(self.path, problem)
        refuse_not_a_file(self.path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no database here (is --data-dir right?)")
        if self.path.stat().st_size == 0:
            raise UsageError(f"{self.path}: the database is empty (0 bytes), no records here (is --data-dir right?)")
        refuse_headerless(self.path)
        peek_foreign(self.path)
        try:
            self.conn = open_read_only(self.path)
            self.conn.execute("BEGIN")
            (tables,) = self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            if tables:
                refuse_foreign(self.path, self.conn)
                # Read as whole, the records of a newer ffe's database would be said wrong.
                refuse_newer_schema(self.path, self.conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise cannot_read_database(self.path, exc) from None
        except (NotADatabase, SchemaError):
            self.conn.close()
            raise
        if not tables:  # a first start stopped before it committed its schema: nothing here yet, as for an empty file
            self.conn.close()
            raise UsageError(f"{self.path}: the database holds no table, no records here (a first start stopped "
                             "before it wrote any; is --data-dir right?)")
        self._reader: compact.RecordReader | None = None

    def close(self) -> None:
        self.conn.close()

    def _record(self, seq: Any, data: Any) -> bytes:
        """An events row's audit record: a backtest run's compact rows unpacked with the run's dictionary."""
        if not compact.is_compact(data):
            return event_line(self.path, seq, data)
        try:
            if self._reader is None:
                text = self.kv(compact.DICTIONARY_KEY)
                self._reader = compact.RecordReader(compact.dictionary_bytes(text) if text is not None else None)
            return self._reader.unpack(data)
        except (ValueError, TypeError, zstandard.ZstdError) as exc:
            raise damaged_database(self.path, f"table events, seq {seq}: data is not a record ({exc})") from None

    def _q(self, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.conn.execute(statement, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot read the database ({exc})") from None

    def check_version(self) -> None:
        """SchemaError for a database a newer ffe wrote: its records are not all this release knows how to read."""
        refuse_newer_schema(self.path, self.conn.execute("PRAGMA user_version").fetchone()[0])

    def integrity(self) -> list[str]:
        """SQLite's integrity check: ['ok'] or the problems found."""
        try:
            return check_problems(self.conn.execute("PRAGMA integrity_check").fetchall())
        except sqlite3.DatabaseError as exc:
            return [str(exc)]

    def events(self, chunk: int = 5000, after: int = 0) -> Iterable[tuple[int, bytes]]:
        """Every event record after seq `after`, (seq, audit line), in seq order."""
        seq = after
        while True:
            rows = self._q("SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk))
            if not rows:
                return
            for s, data in rows:
                yield s, self._record(s, data)
            seq = rows[-1][0]

    def record_of(self, seq: int) -> bytes | None:
        """The audit line of the event of `seq`, None if there is none."""
        for found, line in self.events(chunk=1, after=seq - 1):
            return line if found == seq else None
        return None

    def event_seqs(self, chunk: int = 50000) -> Iterable[int]:
        """The seq of every event record, in order (DamagedDatabase at a record whose data is not the BLOB ffe
        writes, as event_line names it)."""
        seq = 0
        while True:
            rows = self._q("SELECT seq, typeof(data) FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk))
            if not rows:
                return
            for s, kind in rows:
                if kind != "blob":
                    raise not_a_blob(self.path, s, kind.upper())
                yield s
            seq = rows[-1][0]

    def schema_version(self) -> int:
        return int(self._q("PRAGMA user_version")[0][0])

    def row_counts(self) -> dict[str, int]:
        names = [r[0] for r in self._q("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                       "'sqlite_%' ORDER BY name")]
        return {name: int(self._q(f'SELECT COUNT(*) FROM "{name}"')[0][0]) for name in names}

    def fill_counts(self) -> dict[str, int]:
        """client_order_id -> how many fills the database records for it."""
        rows = self._q("SELECT client_order_id, COUNT(*) FROM fills GROUP BY client_order_id")
        return {r[0]: int(r[1]) for r in rows}

    def last_seq(self) -> int:
        return int(self._q("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def orders(self) -> list[Any]:
        """(client_order_id, status, symbol, quantity, filled, venue) of every journaled order."""
        return self._q("SELECT client_order_id, status, symbol, quantity, filled, venue FROM orders "
                       "ORDER BY created_ts, rowid")

    def orders_without_decision(self) -> list[Any]:
        """(client_order_id, decision_id) of every order whose decision has no record (a decision is written after
        the order it placed is journaled: a kill in between loses it)."""
        return self._q("SELECT client_order_id, decision_id FROM orders o WHERE decision_id IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM decisions d WHERE d.decision_id = o.decision_id) ORDER BY created_ts, rowid")

    def fills(self) -> list[Any]:
        """(client_order_id, symbol, side, quantity, price, fee, fee_base, fee_base_value) of every fill, in the order
        recorded. A database an older ffe wrote (not migrated yet) valued the coins a fee took at the fill's price."""
        value = "fee_base_value" if "fee_base_value" in self._columns("fills") else "fee_base * price"
        return self._q(f"SELECT client_order_id, symbol, side, quantity, price, fee, fee_base, {value} FROM fills "
                       "ORDER BY id")

    def _columns(self, table: str) -> set[str]:
        return {r[0] for r in self._q("SELECT name FROM pragma_table_info(?)", (table,))}

    def fill_events(self) -> list[bytes]:
        """The audit records of every `fill` event the database holds, in seq order."""
        rows = self._q("SELECT seq, data FROM events WHERE event = 'fill' ORDER BY seq")
        return [self._record(seq, data) for seq, data in rows]

    def positions(self) -> dict[str, float]:
        return dict(self._q("SELECT symbol, quantity FROM positions"))

    def closed_trades(self) -> list[Any]:
        """(id, symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, exit_client_order_id) of every
        closed trade, by id."""
        return self._q("SELECT id, symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, "
                       "exit_client_order_id FROM trades ORDER BY id")

    def closed_trade_events(self) -> list[bytes]:
        """The audit records of every `position_closed` event the database holds, in seq order."""
        rows = self._q("SELECT seq, data FROM events WHERE event = 'position_closed' ORDER BY seq")
        return [self._record(seq, data) for seq, data in rows]

    def kv(self, key: str) -> Any:
        rows = self._q("SELECT value FROM kv WHERE key = ?", (key,))
        if not rows:
            return None
        if not _is_json(rows[0][0]):
            raise damaged_database(self.path, unreadable(f"table kv, key {key}", "value", rows[0][0], "JSON"))
        return json.loads(rows[0][0])

    def damage(self, account: bool = True, own_market: bool = False) -> str | None:
        """What is damaged in the records (a table or column missing, a value that is not one ffe writes, a record
        missing beside those written with it), or None: the checks a start makes (Store.open), over every order and
        approval. `account` false: a backtest run's records, which keep no books to restore. `own_market`: the
        account's market is made in the process (record_checks)."""
        try:
            columns = schema_columns(self.conn)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot read the database ({exc})") from None
        problem = schema_damage(self.schema_version(), columns)
        if problem is not None:
            return problem
        try:
            for sql, judge in record_checks(every=True, account=account, own_market=own_market):
                for row in self.conn.execute(sql):
                    problem = judge(tuple(row))
                    if problem is not None:
                        return problem
            return fills_damage(self.conn)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot read the database ({exc})") from None

    def events_gap(self) -> str | None:
        """A committed event missing from among those that run on by one (WHOLE_AFTER_KEY), or that key lost or
        damaged; None when neither."""
        try:
            for sql, judge in _EVENTS_RUN_ON:
                for row in self._q(sql):
                    damage = judge(tuple(row))
                    if damage is not None:
                        return damage
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot read the database ({exc})") from None
        return None

    def books_damage(self) -> str | None:
        """Rows that contradict each other where a start rebuilds the books from them (a fill of an order the journal
        lacks, an order's filled not its fills' sum, a position not what the fills make it, an engine_state row
        that says a state other than HALTED unlike its last event): the start refuses them, and so does a backup's
        verify. After `damage`, which checks the fills' figures. A HALTED row without its event is left to `ffe
        doctor`: ffe stores one so in cases whose marks (the disk reserve emptied, a restore's marker) are in the
        data directory, not in a copy of its database."""
        try:
            return contradictions(self.conn) or positions_damage(self.conn) or self._state_row_unsaid()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot read the database ({exc})") from None

    def head_lost(self) -> str | None:
        """The audit chain's head missing beside the chained records it was committed with (`ffe audit verify` checks
        the trail's end against it), or None."""
        sql, judge = _lost_record_check(HEAD_KEY)
        return judge(tuple(self._q(sql)[0]))

    def _state_row_unsaid(self) -> str | None:
        row = self.conn.execute("SELECT state, reason, by FROM engine_state WHERE id = 1").fetchone()
        if row is None or row[0] == EngineState.HALTED.value:
            return None
        judged = state_unsaid_why(tuple(row), _last_state_event(self.path, self._q, functools.partial(
            event_line, self.path)), reserve_used=False, restored=self.kv(RESTORED_KEY) is not None)
        return None if judged is None or judged[1] is not None else judged[0]

    def engine_state(self) -> str | None:
        rows = self._q("SELECT state FROM engine_state WHERE id = 1")
        return rows[0][0] if rows else None

    def approvals_without_decision(self) -> list[tuple[str, str]]:
        """(approval id, decision id) of every approval whose decision the decisions table does not hold."""
        return [(r[0], r[1]) for r in self._q(
            "SELECT a.approval_id, a.decision_id FROM approvals a LEFT JOIN decisions d ON d.decision_id = "
            "a.decision_id WHERE d.decision_id IS NULL ORDER BY a.created_ts")]

    def approval_statuses(self) -> dict[str, str]:
        """approval id -> status, of every approval."""
        return {r[0]: r[1] for r in self._q("SELECT approval_id, status FROM approvals ORDER BY created_ts")}

    def approval_events(self) -> list[bytes]:
        """The audit records of every `approval` event the database holds, in seq order."""
        rows = self._q("SELECT seq, data FROM events WHERE event = 'approval' ORDER BY seq")
        return [self._record(seq, data) for seq, data in rows]

    def engine_state_row(self) -> tuple[Any, ...] | None:
        """(state, reason, by) as stored, or None."""
        rows = self._q("SELECT state, reason, by FROM engine_state WHERE id = 1")
        return tuple(rows[0]) if rows else None

    def last_state_event(self) -> dict[str, Any] | None:
        """The record of the last `engine_state` event that says a state (Store.last_state_event)."""
        return _last_state_event(self.path, self._q, self._record)

    def chain_head(self) -> ChainHead | None:
        """The audit chain's head the database stored (None: no records yet, or written before it was stored)."""
        try:
            value = self.kv(HEAD_KEY)
        except DamagedDatabase:
            value = None
        return chain_head_of(value)


class EventHead:
    """The seq of the last event a database has committed, read afresh at each call. No read transaction is held
    between calls, so a reader that asks for a long time (`ffe audit tail -f`) never keeps a running engine's WAL
    from being checkpointed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        self.file: tuple[int, int] | None = None  # (device, inode) of the file `conn` reads
        self.known: int | None = None

    def last_seq(self) -> int | None:
        """The last committed event's seq (0: none yet); None when there is no database here, or one that cannot
        be read. Once read, a read that fails answers the seq read last: an answer never runs ahead of the
        database. A file put in place of the one read (a restore) is read from then on. SchemaError for a database
        a newer ffe wrote."""
        try:
            st = self.path.stat()
        except OSError:
            self.close()
            return None
        try:
            if self.conn is not None and self.file != (st.st_dev, st.st_ino):
                self.close()
            if self.conn is None:
                if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    return None
                conn = open_read_only(self.path)
                try:  # a newer ffe's records are not all this release can say: SchemaError, as the other readers
                    refuse_newer_schema(self.path, conn.execute("PRAGMA user_version").fetchone()[0])
                except BaseException:
                    conn.close()
                    raise
                self.conn = conn
                self.file = (st.st_dev, st.st_ino)
            row = self.conn.execute("SELECT max(seq) FROM events").fetchall()[0]
        except (OSError, sqlite3.DatabaseError):
            return self.known
        self.known = int(row[0] or 0)
        return self.known

    def record(self, seq: int) -> bytes | None:
        """The database's copy of event `seq`, from the file last_seq last read; None when it holds none as bytes or
        cannot be read."""
        if self.conn is None:
            return None
        try:
            row = self.conn.execute("SELECT data FROM events WHERE seq = ?", (seq,)).fetchone()
        except (OSError, sqlite3.DatabaseError):
            return None
        return bytes(row[0]) if row is not None and isinstance(row[0], bytes) else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def chain_head_of(value: Any) -> ChainHead | None:
    """The chain head from its stored value; None when it is missing or not one."""
    if isinstance(value, dict) and type(value.get("seq")) is int and isinstance(value.get("hash"), str):
        return ChainHead(value["seq"], value["hash"])
    return None


# Saved state that can take precedence over the configuration at the next start (overrides.py).
# kv: the wall time before which the exchange asked for no requests at all (a Retry-After on any request; the
# order path stores its own for orders): a start within it sends nothing.
REQUEST_HOLD_KEY = "venue_request_hold_until"
BACKTEST_RECORDS_KEY = "backtest_records"  # a backtest run's record level, in its own database
BACKTEST_ADAPTIVE_KEY = "backtest_adaptive"  # whether a backtest run applied the weights it learned
EXCHANGE_BOOKS = "exchange_books"  # saved_state: whether the books were made on an exchange's market
SAVED_KEYS = ("approval_mode", "weights", "market", REQUEST_HOLD_KEY, STARTING_CASH_KEY, BOOKS_QUOTE_KEY)


def saved_state(path: Path | str, *, check: bool = True) -> dict[str, Any] | None:
    """What a data directory's database holds that a start would restore over the configuration, read-only and
    without creating anything: None when there is no database. Values that cannot be read are left out; a file that
    SQLite's quick check finds damaged (or that is no SQLite database) is DamagedDatabase, and a directory or another
    application's database NotADatabase, as a start would find them. `check` False leaves the checks out (for a
    start, which makes its own), but for another application's database read as it is (peek_foreign)."""
    path = Path(path)
    if check:
        refuse_not_a_file(path)
    if not reach.is_file(path):
        return None
    if check:
        refuse_headerless(path)
    peek_foreign(path)  # always: opened the usual way, another application's WAL database would get files beside it
    try:
        conn = open_read_only(path)
    except sqlite3.DatabaseError as exc:
        raise unreadable_database(path, exc) from None
    try:
        if check:  # what a start checks first
            problems = check_problems(conn.execute("PRAGMA quick_check").fetchall())
            if problems != ["ok"]:
                raise damaged_database(path, first_problem(problems))
            refuse_foreign(path, conn, checked=True)
            refuse_newer_schema(path, conn.execute("PRAGMA user_version").fetchone()[0])
        out: dict[str, Any] = {}
        with contextlib.suppress(sqlite3.DatabaseError):
            row = conn.execute("SELECT state, reason, by FROM engine_state WHERE id = 1").fetchone()
            if row is not None:
                out["engine_state"] = tuple(row)
        for key in SAVED_KEYS:
            with contextlib.suppress(sqlite3.DatabaseError, ValueError):
                row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    out[key] = json.loads(row[0])
        with contextlib.suppress(sqlite3.DatabaseError):
            out[EXCHANGE_BOOKS] = bool(conn.execute(_SQL_EXCHANGE_BOOKS).fetchone()[0])
        return out
    except sqlite3.DatabaseError as exc:  # met by the quick check: no SQLite database at all, or not readable here
        raise unreadable_database(path, exc) from None
    finally:
        conn.close()


def backtest_records(path: Path | str) -> str | None:
    """The record level a backtest run's database says it keeps (BACKTEST_RECORDS_KEY), read-only and waiting for
    no lock; None when it says none or cannot be read (a run killed before its first flush, one being written), and
    when opening it would change what is beside it: SQLite deletes the WAL of an empty or missing main file (the
    newest records, read-only too), and a hot journal is for a start to roll back."""
    path = Path(path)
    if not reach.is_file(path) or wal_without_database(path) is not None or hot_journal(path) is not None:
        return None
    # A run's database is never in WAL mode (it keeps a rollback journal): one that is, is no run, and reading it
    # would leave -shm and -wal files beside it (another application's database, left as it was found).
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return None
    if len(header) < 20 or header[18] == 2 or header[19] == 2:
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
        try:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (BACKTEST_RECORDS_KEY,)).fetchone()
        finally:
            conn.close()
        level = json.loads(row[0]) if row is not None else None
    except (sqlite3.Error, TypeError, ValueError):
        return None
    return level if isinstance(level, str) else None


def in_use(path: Path | str) -> bool:
    """Whether another process holds the database's lock at this moment: a backtest's writer keeps its run's
    database locked (locking_mode=EXCLUSIVE) until the run ends. Read-only; False when there is no database."""
    path = Path(path)
    if not path.is_file() or wal_without_database(path) is not None:  # opened, that WAL would be deleted
        return False
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    except sqlite3.DatabaseError:
        return False  # damaged or not a database: nobody is writing it
    return False


def order_figures(records: Records) -> list[Any]:
    """(client_order_id, symbol, side, quantity, average, fee) of every journaled order, in the order journaled: the
    figures `ffe doctor` compares with the order's own `order` events and fills."""
    return records._q("SELECT client_order_id, symbol, side, quantity, average, fee FROM orders "
                      "ORDER BY created_ts, rowid")
