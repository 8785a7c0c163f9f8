"""A database that cannot be trusted stops the start: one line naming it, a non-zero exit, the process ends (no
thread left behind keeps it alive), and the file is left exactly as it was found. An empty or missing database
beside an audit trail with records is a lost database, never a first start.

Every start is a real `ffe run` subprocess over real files; of the `ffe doctor` reads that follow, the first is a
real process too and the rest run in the test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (count_events, db_rows, ffe_cmd, ffe_env, ffe_in_process, run_ffe, run_ffe_paging, starter_config,
                      wait_until)
from ffe_engine import backup as bk
from test_backup import repack


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    """A data and log directory left by a real run that traded (with a checkpointed database)."""
    cwd = tmp_path_factory.mktemp("good")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "40", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "data" / "ffe.db").stat().st_size > 20_000
    assert (cwd / "logs" / "audit.jsonl").stat().st_size > 0
    return cwd


def copy_of(good_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(good_dir / "data", tmp_path / "data")
    shutil.copytree(good_dir / "logs", tmp_path / "logs")
    for stale in ("ffe.db-wal", "ffe.db-shm"):
        (tmp_path / "data" / stale).unlink(missing_ok=True)
    return tmp_path


def truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def garbage(db: Path) -> None:
    db.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(65_536)))


def header_only(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:100])


def page_damaged(db: Path) -> None:
    # The header and schema stay whole; a table page in the middle is overwritten.
    data = bytearray(db.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = b"\xa5" * page
    db.write_bytes(bytes(data))


def index_damaged(db: Path) -> None:
    # An index entry no longer its row's (one character of a decision id in the index's first leaf page): SQLite's
    # quick check passes it, as it compares no index with its table; its integrity check does not.
    conn = sqlite3.connect(db)
    try:
        (page,) = conn.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_decisions_1' "
                               "AND pagetype = 'leaf' LIMIT 1").fetchone()
        ids = [r[0].encode() for r in conn.execute("SELECT decision_id FROM decisions")]
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    data = bytearray(db.read_bytes())
    leaf = bytes(data[(page - 1) * size:page * size])
    found = next(i for i in ids if i in leaf)
    at = (page - 1) * size + leaf.index(found) + len(found) - 1
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    db.write_bytes(bytes(data))


def emptied(db: Path) -> None:
    db.write_bytes(b"")


def removed(db: Path) -> None:
    db.unlink()


def assert_refused(proc: subprocess.CompletedProcess, db: Path, before: bytes | None) -> None:
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ffe: error: "), lines
    assert "ffe.db" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert "engine started" not in proc.stderr
    if before is None:
        assert not db.exists() or db.stat().st_size == 0
    else:
        assert db.read_bytes() == before, "the damaged database was changed"


def beside_database(db: Path) -> list[str]:
    """The database's files (`ffe.db` and what SQLite keeps beside it: -wal, -shm, -journal) in its directory."""
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name))


@pytest.mark.parametrize("damage", [truncated, garbage, header_only, page_damaged, index_damaged, emptied, removed],
                         ids=lambda f: f.__name__)
def test_a_damaged_or_lost_database_stops_the_headless_start_with_one_line(good_dir, tmp_path, damage):
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    audit = cwd / "logs" / "audit.jsonl"
    audit_before = audit.read_bytes()
    damage(db)
    before = db.read_bytes() if db.exists() and db.stat().st_size else None
    beside = beside_database(db)
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_refused(proc, db, before)
    assert audit.read_bytes() == audit_before, "the audit trail was written by a start that was refused"
    assert beside_database(db) == beside, "the refused start created files beside the damaged database"
    if damage is index_damaged:
        assert "missing from index sqlite_autoindex_decisions_1" in proc.stderr, proc.stderr
    if damage in (emptied, removed):
        assert "audit" in proc.stderr  # why it is not taken for a first start
        # A mistyped --data-dir beside the account's log directory reads the same: the line says to check it
        # before a healthy trail is moved away.
        assert "names another directory than the account's" in proc.stderr, proc.stderr


READ_ONLY_COMMANDS = {
    "doctor": ("doctor",), "audit verify": ("audit", "verify"), "backup": ("backup", "--to", "backups"),
    "config check": ("config", "check"), "report trades": ("report", "trades"), "audit show": ("audit", "show", "1"),
    "audit tail": ("audit", "tail"),
}


@pytest.mark.parametrize("damage", [truncated, page_damaged], ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", READ_ONLY_COMMANDS)
def test_the_commands_that_only_read_leave_a_damaged_database_as_it_is(good_dir, tmp_path, damage, command):
    """Read with nothing beside it (no -wal, no journal: as a clean stop leaves it), a damaged file is left as it
    is, as by a refused start: no empty ffe.db-wal or ffe.db-shm made beside it."""
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    damage(db)
    before, beside = db.read_bytes(), beside_database(db)
    proc = run_ffe(cwd, *READ_ONLY_COMMANDS[command], timeout=30)
    assert "Traceback" not in proc.stderr, proc.stderr
    if command not in ("audit tail", "config check"):
        assert proc.returncode != 0 and "ffe.db" in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    assert db.read_bytes() == before, "the damaged database was changed"
    assert beside_database(db) == beside, f"{command} created files beside the damaged database"


@pytest.mark.parametrize("content", [b"x", b"not a database, just some text\n", b"SQLite format"],
                         ids=["one byte", "text", "part of a header"])
def test_a_file_shorter_than_a_database_is_no_first_start(tmp_path, content):
    """SQLite reads a file shorter than its header as an empty database: a start on one with no audit trail beside it
    would take it for a first start's and make a new account over it. It is refused as damage, left as it is, and
    doctor says the same."""
    db = tmp_path / "data" / "ffe.db"
    db.parent.mkdir()
    db.write_bytes(content)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_refused(proc, db, content)
    assert proc.returncode == 1 and "is no SQLite database" in proc.stderr, proc.stderr
    assert beside_database(db) == ["ffe.db"]
    for command, code in ((("doctor",), 1), (("backup", "--to", "backups"), 1), (("report", "trades"), 1),
                          (("audit", "show", "1"), 1), (("audit", "verify"), 2)):
        proc = run_ffe(tmp_path, *command, timeout=30)
        assert proc.returncode == code and "is no SQLite database" in proc.stderr, (command, proc.returncode,
                                                                                    proc.stderr)
    proc = run_ffe(tmp_path, "config", "check", timeout=30)
    assert proc.returncode == 0 and "is no SQLite database" in proc.stdout and "next start will stop" in proc.stdout
    assert db.read_bytes() == content


def test_a_first_start_still_creates_the_database(tmp_path):
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "ffe.db").stat().st_size > 0


def test_a_damaged_database_stops_the_console_start_too(good_dir, tmp_path):
    """The console, on a real terminal: it shows nothing for long, prints the line and the process ends."""
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    garbage(db)
    before = db.read_bytes()
    starter_config(cwd)
    master, slave = pty.openpty()
    env = ffe_env(TERM="xterm-256color", COLUMNS="100", LINES="30")
    # The console draws on stderr (Textual's way), so all three are the terminal; its output is read back.
    proc = subprocess.Popen(ffe_cmd("run", "--max-bars", "5"), cwd=cwd, env=env, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: every process on it has ended
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        with contextlib.suppress(subprocess.TimeoutExpired):  # the terminal closes just before the process ends
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError("the console start did not end: " + output.decode(errors="replace")[-2000:])
    text = output.decode(errors="replace")
    assert proc.wait(timeout=10) == 1, text[-2000:]
    error = text[text.rindex("ffe: error: "):]
    assert "ffe.db" in error and "damaged" in error, error
    assert "Traceback" not in text
    assert db.read_bytes() == before


# ---------------------------------------------------------------------------------------------------- damaged records
# Records that pass SQLite's quick check but are not what ffe wrote: (the change, a word the one line must name).
DAMAGED_RECORDS = {
    "kv_not_json": ("UPDATE kv SET value = 'not json' WHERE key = 'portfolio'", "portfolio"),
    "unknown_engine_state": ("UPDATE engine_state SET state = 'BOGUS'", "BOGUS"),
    "table_dropped": ("DROP TABLE approvals", "approvals"),
    "column_dropped": ("ALTER TABLE orders DROP COLUMN intent", "intent"),
    "unknown_position_side": ("UPDATE positions SET side = 'sideways'", "sideways"),
    # the state the engine was left in (HALTED, say) gone: never a fresh start in its place
    "engine_state_emptied": ("DELETE FROM engine_state", "engine_state"),
    # JSON, but not the books: read as empty, the peak equity and the drawdown baseline would be lost
    "portfolio_not_an_object": ("UPDATE kv SET value = '[]' WHERE key = 'portfolio'", "portfolio"),
    # a figure inside the books that is not one: taken as it is, the engine would trade on it or fail mid-start
    "portfolio_cash_not_a_number": (
        "UPDATE kv SET value = json_set(value, '$.cash', 'abc') WHERE key = 'portfolio'", "cash"),
    "portfolio_peak_equity_null": (
        "UPDATE kv SET value = json_set(value, '$.peak_equity', json('null')) WHERE key = 'portfolio'", "peak_equity"),
    "portfolio_peak_equity_missing": (
        "UPDATE kv SET value = json_remove(value, '$.peak_equity') WHERE key = 'portfolio'", "peak_equity"),
    "portfolio_price_not_a_number": (
        """UPDATE kv SET value = json_set(value, '$.last_price."ETH/USDT"', '3000') WHERE key = 'portfolio'""",
        "last_price.ETH/USDT"),
    "paper_balance_not_a_number": (
        "UPDATE kv SET value = json_set(value, '$.balances.USDT', 'lots') WHERE key = 'paper_venue'",
        "balances.USDT"),
    "paper_order_not_an_object": (
        "UPDATE kv SET value = json_set(value, '$.orders[0]', 7) WHERE key = 'paper_venue'", "orders[0]"),
    # an order a start would settle at the venue, whose intent lacks what it was for: never a bare KeyError
    "order_intent_without_its_symbol": (
        "UPDATE orders SET status = 'new', intent = json_remove(intent, '$.symbol') "
        "WHERE rowid = (SELECT MAX(rowid) FROM orders)", "intent.symbol"),
    "order_intent_quantity_not_a_number": (
        "UPDATE orders SET status = 'new', intent = json_set(intent, '$.quantity', 'all') "
        "WHERE rowid = (SELECT MAX(rowid) FROM orders)", "intent.quantity"),
    # who asked for the order (an operator's name) that is not one: never read as someone's word
    "order_intent_by_not_a_name": (
        "UPDATE orders SET status = 'new', intent = json_set(intent, '$.by', 7) "
        "WHERE rowid = (SELECT MAX(rowid) FROM orders)", "intent.by"),
    "position_quantity_not_a_number": ("UPDATE positions SET quantity = 'abc'", "quantity"),
    # committed event records lost (the chain's head, committed with them, still names the last): a start that went
    # on would number its records after the head, and the trail it repaired to the rows left would never verify
    "events_lost": ("DELETE FROM events WHERE seq > (SELECT MAX(seq) - 10 FROM events)", "table events"),
    "position_entry_price_negative": ("UPDATE positions SET entry_price = -1", "entry_price"),
    # an order of a status no ffe writes may be at the venue, in flight: never passed over as if it were final
    "order_status_unknown": (
        "UPDATE orders SET status = 'weird' WHERE rowid = (SELECT MAX(rowid) FROM orders)", "weird"),
    # an order's status put back from the end its events say (by hand): taken as open, a start "recovered" it at the
    # venue and recorded a second end, after which `ffe doctor` found nothing wrong
    "order_status_back_to_open": (
        "UPDATE orders SET status = 'open' WHERE client_order_id = "
        "(SELECT client_order_id FROM orders WHERE status = 'filled' ORDER BY created_ts LIMIT 1)",
        "is open in the journal, filled in the audit trail"),
    "order_filled_beyond_its_quantity": (
        "UPDATE orders SET status = 'open', filled = quantity * 2 WHERE rowid = (SELECT MAX(rowid) FROM orders)",
        "filled"),
    # a pending approval whose status was changed by hand: never dropped as if it had ended
    "approval_status_unknown": (
        "INSERT INTO approvals SELECT 'apr-edited', decision_id, symbol, 'buy', 0.001, price, 0, 0, 'weird', NULL, "
        "NULL, '{}', '[]', NULL FROM decisions LIMIT 1", "weird"),
    # the books gone beside the orders and fills they were written with: never fresh books in their place
    "portfolio_missing": ("DELETE FROM kv WHERE key = 'portfolio'", "portfolio"),
    "paper_venue_missing": ("DELETE FROM kv WHERE key = 'paper_venue'", "paper_venue"),
    # the simulated market, stored with the books at every bar: a fresh one would price the positions carried across
    # on a new path from the seed, not the one they were opened on
    "market_missing": ("DELETE FROM kv WHERE key = 'market'", "market"),
    # measured at the first reconciliation: taken again, the venue as it is now would be accepted unseen
    "reconcile_baseline_missing": ("DELETE FROM kv WHERE key = 'reconcile_baseline'", "reconcile_baseline"),
    # the audit chain's head, committed with the events it ends: without it nothing says where the trail must end
    "audit_head_missing": ("DELETE FROM kv WHERE key = 'audit_head'", "audit_head"),
    # the records a start reads besides the books: of another type, a start would stop on them in a traceback (a
    # restore marker's time, the cash accepted, an order's cancel time) or pass them over (a hold, the approval mode
    # manual the operator chose)
    "restore_marker_time_not_a_number": (
        "INSERT OR REPLACE INTO kv VALUES ('restored_from_backup', "
        "'{\"backup\": \"b\", \"taken_ms\": \"x\", \"seq\": 1, \"restored_ms\": 1}', 0)", "taken_ms"),
    "restore_marker_time_missing": (
        "INSERT OR REPLACE INTO kv VALUES ('restored_from_backup', '{\"backup\": \"b\", \"seq\": 1}', 0)", "taken_ms"),
    "cash_accepted_not_a_number": ("INSERT OR REPLACE INTO kv VALUES ('cash_accepted', '\"x\"', 0)", "cash_accepted"),
    "cancel_due_time_not_a_number": (
        "INSERT OR REPLACE INTO kv VALUES ('orders_cancel_due', '{\"ffe-a\": \"soon\"}', 0)", "orders_cancel_due"),
    "cancel_asked_not_a_list": (
        "INSERT OR REPLACE INTO kv VALUES ('orders_cancel_asked', '5', 0)", "orders_cancel_asked"),
    "repeat_refused_not_a_list": (
        "INSERT OR REPLACE INTO kv VALUES ('orders_repeat_refused', '5', 0)", "orders_repeat_refused"),
    "accepted_orders_not_a_list": (
        "INSERT OR REPLACE INTO kv VALUES ('reconcile_accepted_orders', '5', 0)", "reconcile_accepted_orders"),
    "order_hold_not_a_time": (
        "INSERT OR REPLACE INTO kv VALUES ('venue_hold_until', '\"later\"', 0)", "venue_hold_until"),
    "request_hold_not_a_time": (
        "INSERT OR REPLACE INTO kv VALUES ('venue_request_hold_until', '\"later\"', 0)", "venue_request_hold_until"),
    "approval_mode_unknown": (
        "INSERT OR REPLACE INTO kv VALUES ('approval_mode', '\"manul\"', 0)", "approval_mode"),
    # Rows that contradict each other: the books a start rebuilds from them would hold money or coins that never were.
    "fill_of_no_order": (
        "INSERT INTO fills (client_order_id, symbol, side, quantity, price, fee, ts) "
        "VALUES ('ffe-nowhere', 'BTC/USDT', 'sell', 0.5, 60000.0, 0.0, 1700000000000)", "ffe-nowhere"),
    "order_filled_beyond_its_fills": (
        "UPDATE orders SET filled = filled / 2 WHERE client_order_id = "
        "(SELECT client_order_id FROM orders WHERE filled > 0 ORDER BY created_ts LIMIT 1)", "filled"),
    "position_without_fills": (
        "INSERT INTO positions VALUES ('XRP/USDT', 'buy', 0.5, 3000.0, 1700000000000, NULL, NULL, NULL, 0.0)",
        "position XRP/USDT"),
    "fill_fee_in_coins_not_a_number": (
        "UPDATE fills SET fee_base = '0.0x' WHERE id = (SELECT MIN(id) FROM fills)", "fee_base '0.0x'"),
    "fill_side_unknown": ("UPDATE fills SET side = 'Sell' WHERE id = (SELECT MIN(id) FROM fills)", "side 'Sell'"),
    # The figures the cash is rebuilt from (fee less what of it the coins paid): a million from nowhere otherwise.
    "fill_fee_below_zero": ("UPDATE fills SET fee = -1000000 WHERE id = (SELECT MIN(id) FROM fills)", "fee -1000000"),
    "fill_fee_value_beyond_its_fee": (
        "UPDATE fills SET fee_base_value = 1000000 WHERE id = (SELECT MIN(id) FROM fills)", "fee_base_value 1000000"),
    "fill_fee_value_not_a_number": (
        "UPDATE fills SET fee_base_value = 'abc' WHERE id = (SELECT MIN(id) FROM fills)", "fee_base_value 'abc'"),
}


def damage_record(db: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute(statement).rowcount != 0
    assert not [p.name for p in db.parent.iterdir() if p.name.startswith("ffe.db-")]


def damaged_backup(good_dir: Path, tmp_path: Path, statement: str) -> str:
    """A backup of good_dir's records whose database has `statement` applied inside it, its checksums made to
    match (a disk's or a hand's damage after it was taken): `ffe backup` refuses to take damaged records. Its file."""
    whole = copy_of(good_dir, tmp_path / "whole")
    made = run_ffe(whole, "backup", "--to", "backups", "--json")
    assert made.returncode == 0, made.stderr
    file = Path(json.loads(made.stdout)["file"])
    work = tmp_path / "unpacked"
    work.mkdir()
    bk.unpack(file, work)
    damage_record(work / bk.DB_NAME, statement)
    return str(repack(work, file))


def assert_one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ffe: error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


@pytest.mark.parametrize("damage", DAMAGED_RECORDS)
def test_a_damaged_record_stops_the_start_with_one_line_and_doctor_names_it(good_dir, tmp_path, damage):
    statement, word = DAMAGED_RECORDS[damage]
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    audit = cwd / "logs" / "audit.jsonl"
    damage_record(db, statement)
    before, audit_before = db.read_bytes(), audit.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    line = assert_one_line(proc, "ffe.db", "damaged", word)
    assert "engine started" not in proc.stderr and "fresh start" not in proc.stderr, proc.stderr[-3000:]
    assert db.read_bytes() == before, "the damaged database was changed"
    assert beside_database(db) == ["ffe.db"], "the refused start created files beside the damaged database"
    assert audit.read_bytes() == audit_before, "the audit trail was written by a start that was refused"
    # `ffe doctor`: the first damage as a real process, the rest in this process (a read that ends before logging).
    doctor = (run_ffe if damage == next(iter(DAMAGED_RECORDS)) else ffe_in_process)(cwd, "doctor")
    assert doctor.stdout == ""
    assert assert_one_line(doctor, "ffe.db", word), line
    assert db.read_bytes() == before


def test_a_trail_cut_short_beside_a_database_whose_chain_head_was_deleted_fails_verify(good_dir, tmp_path):
    cwd = copy_of(good_dir, tmp_path)
    damage_record(cwd / "data" / "ffe.db", DAMAGED_RECORDS["audit_head_missing"][0])
    audit = cwd / "logs" / "audit.jsonl"
    lines = audit.read_bytes().splitlines(keepends=True)
    audit.write_bytes(b"".join(lines[:len(lines) // 2]))
    proc = run_ffe(cwd, "audit", "verify")
    assert proc.returncode == 1 and "intact" not in proc.stdout, proc.stdout + proc.stderr
    assert "audit_head" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("which", ["MAX", "MIN"], ids=["last", "first"])
def test_an_event_record_stored_as_text_is_named_as_damaged(good_dir, tmp_path, which):
    """An events row whose data is TEXT instead of BLOB (the same bytes, written back by a tool or by hand in the
    sqlite3 shell): every command that reads it names the database, the table and the seq in one line, exit 1; a
    traceback was all `ffe doctor`, `ffe backup` and a start said of it, and `ffe audit verify` passed it. A start
    reads the last records only."""
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    ((seq,),) = db_rows(db, f"SELECT {which}(seq) FROM events")
    damage_record(db, f"UPDATE events SET data = CAST(data AS TEXT) WHERE seq = {seq}")
    before = db.read_bytes()
    commands = [("doctor",), ("backup", "--to", "backups"), ("audit", "verify")]
    if which == "MAX":
        commands.append(("run", "--headless", "--max-bars", "1"))
    for args in commands:
        proc = run_ffe(cwd, *args, timeout=30)
        line = assert_one_line(proc, "damaged", f"table events, seq {seq}: ")
        # the database of the data directory, never a copy of it a backup reads
        assert line.startswith(f"ffe: error: {Path('data') / 'ffe.db'}: "), line
        assert db.read_bytes() == before, args
    assert not (cwd / "backups").exists() or not list((cwd / "backups").iterdir())


# A fill's figures edited against its order's: the order's average and fee are what its fills make them (written in
# one transaction), and the start rebuilds the cash from the fills.
FILL_AGAINST_ITS_ORDER = {
    "price_halved": ("UPDATE fills SET price = price / 2 WHERE id = (SELECT MIN(id) FROM fills)", "cost"),
    "fee_raised": ("UPDATE fills SET fee = fee + 5 WHERE id = (SELECT MIN(id) FROM fills)", "fee"),
}


@pytest.mark.parametrize("damage", FILL_AGAINST_ITS_ORDER)
def test_a_fill_whose_figures_contradict_its_order_stops_the_start_and_a_backup_s_verify(good_dir, tmp_path,
                                                                                         damage):
    statement, figure = FILL_AGAINST_ITS_ORDER[damage]
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    (cid,) = db_rows(db, "SELECT client_order_id FROM fills WHERE id = (SELECT MIN(id) FROM fills)")[0]
    damage_record(db, statement)
    before = db.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_one_line(proc, "ffe.db", "damaged", f"table orders, order {cid}: ", figure, "its fills")
    assert "engine started" not in proc.stderr, proc.stderr[-3000:]
    assert db.read_bytes() == before
    made = run_ffe(cwd, "backup", "--to", "backups", "--json")
    assert_one_line(made, "ffe.db", f"table orders, order {cid}: ", figure, "its fills",
                    "no backup was written and none pruned")
    assert not list((cwd / "backups").glob("ffe-backup-*"))
    verify = run_ffe(cwd, "backup", "verify", damaged_backup(good_dir, tmp_path, statement))
    assert_one_line(verify, "ffe.db", f"table orders, order {cid}: ", figure, "its fills")


def test_a_schema_version_older_than_the_tables_stops_the_start_with_one_line(good_dir, tmp_path):
    # The tables of this version under an older version's number (set by hand, a tool's mistake): the migrations
    # to this version cannot be applied again to them. One line naming the file and what differs, nothing changed.
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version = 2")
    before = db.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_one_line(proc, "ffe.db", "damaged", "schema version 2", "migration to version 3")
    assert "engine started" not in proc.stderr
    assert db.read_bytes() == before
    assert db_rows(db, "PRAGMA user_version") == [(2,)]


@pytest.fixture(scope="module")
def scored_dir(tmp_path_factory) -> Path:
    """A run long enough to close trades, whose providers were scored (the learner's weights stored)."""
    cwd = tmp_path_factory.mktemp("scored")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "400", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    with contextlib.closing(sqlite3.connect(cwd / "data" / "ffe.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM provider_scores").fetchone()[0] > 0
    return cwd


def test_a_closed_trade_deleted_by_hand_leaves_its_id_to_no_other(scored_dir, tmp_path):
    """The newest `trades` row deleted: its `position_closed` event still names its id. The next trade closed took
    the same id (numbered from the largest id left), two events then named one trade and `ffe doctor`, seeing the
    row of the second, no longer found the first missing."""
    cwd = copy_of(scored_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    (deleted,) = db_rows(db, "SELECT MAX(id) FROM trades")[0]
    damage_record(db, f"DELETE FROM trades WHERE id = {deleted}")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "400", env=ffe_env(FFE_MARKET__SEED=7), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    later = [r[0] for r in db_rows(db, "SELECT id FROM trades WHERE id > ? ORDER BY id", (deleted - 1,))]
    assert later and later[0] == deleted + 1, later  # the next trade closed: the id after the deleted one
    said = [json.loads(d)["trade_id"] for (d,) in db_rows(db, "SELECT data FROM events WHERE event = "
                                                              "'position_closed'")]
    assert len(said) == len(set(said)) and deleted in said
    assert deleted not in [r[0] for r in db_rows(db, "SELECT id FROM trades")]


def test_the_learners_weights_lost_beside_its_scores_stop_the_start(scored_dir, tmp_path):
    """The weights are written with the scores of the trade that moved them: gone while the scores are there, they
    were lost, and a start would trade on the configured weights as if nothing had been learned."""
    cwd = copy_of(scored_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    damage_record(db, "DELETE FROM kv WHERE key = 'weights'")
    before = db.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_one_line(proc, "ffe.db", "damaged", "weights", "provider_scores")
    assert db.read_bytes() == before
    assert_one_line(ffe_in_process(cwd, "doctor"), "ffe.db", "weights")


def test_books_lost_where_no_order_was_ever_made_are_a_first_start_still(tmp_path):
    """Records of runs that never traded (killed before the first bar's books were stored, say) lose nothing with
    their books: the start goes on, and stores them."""
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "1", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "data" / "ffe.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
        conn.execute("DELETE FROM kv WHERE key IN ('portfolio', 'paper_venue', 'weights')")
    assert ffe_in_process(tmp_path, "doctor").returncode == 0
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "2", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM kv WHERE key = 'portfolio'").fetchone()[0] == 1


@pytest.mark.parametrize("damage", ["kv_not_json", "position_without_fills"])
def test_backup_verify_finds_a_damaged_record(good_dir, tmp_path, damage):
    # What the start refuses, a backup's verify and a restore refuse too (rows that contradict each other among
    # them: the restored start would be refused).
    statement, word = DAMAGED_RECORDS[damage]
    cwd = copy_of(good_dir, tmp_path)
    damage_record(cwd / "data" / "ffe.db", statement)
    made = run_ffe(cwd, "backup", "--to", "backups", "--json")
    assert_one_line(made, "ffe.db", word, "no backup was written and none pruned")
    file = damaged_backup(good_dir, tmp_path, statement)
    verify = run_ffe(cwd, "backup", "verify", file)
    assert verify.stdout == ""
    assert_one_line(verify, "ffe.db", word)
    restore = run_ffe(tmp_path, "restore", file, "--data-dir", "restored/data", "--log-dir", "restored/logs")
    assert_one_line(restore, "ffe.db", word)
    assert not (tmp_path / "restored" / "data" / "ffe.db").exists()


def test_an_order_status_put_back_is_refused_by_a_backup_s_verify_and_a_restore(good_dir, tmp_path):
    # What the start refuses of it (above), a restore would put in place for the next start to refuse.
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    ((cid,),) = db_rows(db, "SELECT client_order_id FROM orders WHERE status = 'filled' ORDER BY created_ts LIMIT 1")
    damage_record(db, DAMAGED_RECORDS["order_status_back_to_open"][0])
    made = run_ffe(cwd, "backup", "--to", "backups", "--json")  # no backup is taken of them
    assert_one_line(made, f"order {cid} is open in the database, filled in the audit trail", "no backup was written")
    file = damaged_backup(good_dir, tmp_path, DAMAGED_RECORDS["order_status_back_to_open"][0])
    verify = run_ffe(cwd, "backup", "verify", file)
    assert_one_line(verify, f"order {cid} is open in the database, filled in the audit trail")
    restore = run_ffe(tmp_path, "restore", file, "--data-dir", "restored/data", "--log-dir", "restored/logs")
    assert_one_line(restore, f"order {cid} is open in the database, filled in the audit trail")
    assert not (tmp_path / "restored" / "data" / "ffe.db").exists()


def test_a_halt_the_database_lost_with_its_wal_still_halts_the_next_start(tmp_path, spawn_ffe):
    """`ffe ctl halt` answered, then a kill, then the database's write-ahead log lost (deleted, a disk that kept
    the main file only): the database no longer holds the halt, and the trail's records after its last event are
    set aside as never committed. The halt they hold is not dropped with them: the start comes up HALTED (the
    safer of the two, docs/states.md), saying why, and trades nothing."""
    starter_config(tmp_path)
    db = tmp_path / "data" / "ffe.db"
    audit = tmp_path / "logs" / "audit.jsonl"
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "20")  # a database checkpointed at its stop
    assert first.returncode == 0, first.stderr
    before = count_events(audit, "decision")
    # Paced so that the records after the halt stay short of SQLite's automatic checkpoint (1,000 pages of log)
    # until the kill, however long a loaded machine takes to send it: checkpointed, the halt would not be lost.
    p = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: count_events(audit, "decision") >= before + 10 or not p.alive(), what="decisions")
    halted = run_ffe(tmp_path, "ctl", "halt")
    assert halted.returncode == 0, halted.stderr
    p.kill()
    assert count_events(audit, "kill_switch") == 1
    assert (tmp_path / "data" / "ffe.db-wal").exists()
    for lost in ("ffe.db-wal", "ffe.db-shm"):
        (tmp_path / "data" / lost).unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT state FROM engine_state").fetchone() != ("HALTED",)  # the halt went with the log
        (orders,) = con.execute("SELECT COUNT(*) FROM orders").fetchone()

    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert again.returncode == 0, again.stderr
    assert "never committed" in again.stderr
    with contextlib.closing(sqlite3.connect(db)) as con:
        state, reason = con.execute("SELECT state, reason FROM engine_state").fetchone()
        assert state == "HALTED" and "never committed" in reason, reason
        # a whole run's records lost with the log: the reason says so first, and what is left to do
        assert reason.startswith("the database lost committed records ("), reason
        assert "restore the newest backup, or check the books and re-arm" in reason, reason
        assert con.execute("SELECT COUNT(*) FROM orders").fetchone() == (orders,)  # no order since


def halted_account(cwd: Path, spawn_ffe) -> None:
    """A paper account the operator halted (`ffe ctl halt`), its engine stopped since."""
    starter_config(cwd)
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"), name="engine")
    wait_until(lambda: "control socket ready" in engine.stderr or not engine.alive(), timeout=60,
               what="the engine answering")
    halted = run_ffe(cwd, "ctl", "halt")
    assert halted.returncode == 0, halted.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr


@pytest.mark.parametrize("state", ["RUNNING", "PAUSED"])
async def test_a_halted_state_row_edited_to_another_state_stops_the_start_with_one_line(tmp_path, spawn_ffe, state):
    """The engine_state row of a HALTED account edited by hand (its last engine_state event says HALTED): the start
    judges it as `ffe doctor` does, damage, never the state the row says. It came up RUNNING and traded, saying the
    row was stored without its event, which only HALTED ever is (a full disk, a restore)."""
    halted_account(tmp_path, spawn_ffe)
    db = tmp_path / "data" / "ffe.db"
    audit = tmp_path / "logs" / "audit.jsonl"
    damage_record(db, f"UPDATE engine_state SET state = '{state}'")
    [(orders,)] = db_rows(db, "SELECT COUNT(*) FROM orders")
    before, audit_before = db.read_bytes(), audit.read_bytes()
    proc, hook = await run_ffe_paging(tmp_path, "run", "--headless", "--max-bars", "5")
    line = assert_one_line(proc, "ffe.db", "damaged", f"the engine_state row says {state}",
                           "the last engine_state event says HALTED")
    assert "engine started" not in proc.stderr, proc.stderr[-3000:]
    pages = [r.body for r in hook.delivered if r.body.get("severity") == "page"]
    assert [p["kind"] for p in pages] == ["START_FAILED"], [r.body for r in hook.delivered]
    assert db.read_bytes() == before, "the damaged database was changed"
    assert audit.read_bytes() == audit_before, "the audit trail was written by a start that was refused"
    assert db_rows(db, "SELECT COUNT(*) FROM orders") == [(orders,)]
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 1, doctor.stderr
    said = doctor.stderr.strip().split("ffe.db: ", 1)[1]  # one judgement: the start's line says what doctor says
    assert said.startswith("the engine_state row says") and said in line, (line, doctor.stderr)


def half_cut_beside_its_wal(cwd: Path) -> Path:
    """The database cut to half its size while its WAL (holding the schema page) stays whole, as a kill then a
    copy gone wrong leave it: SQLite opens it and its check finds a hundred damaged pages."""
    db = cwd / "data" / "ffe.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # Pages enough for the cut to fall among a hundred of them, as in an account's database of some months.
    conn.execute("CREATE TABLE filler (a)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1000),) for _ in range(1000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE x (a)")
    conn.execute("DROP TABLE x")
    conn.execute("COMMIT")
    shutil.copytree(cwd / "data", cwd / "left")  # the connection is open: its WAL is copied unmerged
    conn.close()
    shutil.rmtree(cwd / "data")
    (cwd / "left").rename(cwd / "data")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    return db


def test_a_database_with_many_damaged_pages_is_one_line_with_the_first_problem_and_a_count(good_dir, tmp_path):
    cwd = copy_of(good_dir, tmp_path)
    db = half_cut_beside_its_wal(cwd)
    for args in (("run", "--headless", "--max-bars", "3"), ("doctor",)):
        proc = run_ffe(cwd, *args, timeout=30)
        line = assert_one_line(proc, "ffe.db", "Page ")
        assert "more" in line and len(line) < 400, line
    assert db.exists()


def test_an_audit_trail_that_is_a_directory_is_one_line_naming_it(good_dir, tmp_path):
    cwd = copy_of(good_dir, tmp_path)
    audit = cwd / "logs" / "audit.jsonl"
    audit.unlink()
    audit.mkdir()
    verify = run_ffe(cwd, "audit", "verify")
    assert verify.returncode == 2 and "Traceback" not in verify.stderr, verify.stderr[-3000:]
    assert verify.stderr.strip().count("\n") == 0 and "logs/audit.jsonl" in verify.stderr, verify.stderr
    doctor = run_ffe(cwd, "doctor")  # a path to put right, as for a directory in place of the database: exit 2
    assert doctor.returncode == 2 and "Traceback" not in doctor.stderr, doctor.stderr[-3000:]
    assert doctor.stderr.splitlines() == [f"ffe: error: {Path('logs') / 'audit.jsonl'}: is a directory, not a file; "
                                          "it was left as it is: move it away (is --log-dir right?)"], doctor.stderr


def edited_last_record(cwd: Path) -> None:
    audit = cwd / "logs" / "audit.jsonl"
    lines = audit.read_bytes().split(b"\n")
    rec = json.loads(lines[-2])
    rec["ts"] = "2020-01-01T00:00:00.000Z"
    lines[-2] = json.dumps(rec, separators=(",", ":")).encode()
    audit.write_bytes(b"\n".join(lines))


def database_lost(cwd: Path) -> None:
    (cwd / "data" / "ffe.db").unlink()


@pytest.mark.parametrize("damage", [edited_last_record, database_lost], ids=lambda f: f.__name__)
async def test_records_that_disagree_page_start_failed_not_a_disk_failure(good_dir, tmp_path, damage):
    """An audit trail whose last record is not the database's copy (edited), or a database gone while its trail
    remains, is damage to the records, not a disk that takes no write: the page says START_FAILED, and a halt
    stored for it says the records are damaged, so the operator looks at them, not at the disk."""
    cwd = copy_of(good_dir, tmp_path)
    damage(cwd)
    proc, hook = await run_ffe_paging(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr
    pages = [r.body for r in hook.delivered if r.body.get("severity") == "page"]
    assert [p["kind"] for p in pages] == ["START_FAILED"], [r.body for r in hook.delivered]
    assert "cannot be written" not in proc.stderr and "free space" not in proc.stderr, proc.stderr
    db = cwd / "data" / "ffe.db"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            row = conn.execute("SELECT state, reason FROM engine_state").fetchone()
        assert row is None or "cannot be written" not in row[1], row


def test_a_start_refused_for_a_record_that_is_not_the_database_s_sends_the_operator_where_it_is_named(good_dir,
                                                                                                       tmp_path):
    # `ffe audit verify` checks the trail's chain, which an edit that rewrote the chain keeps whole: the start named
    # it as the place to look, and it said the trail was intact. `ffe doctor` compares each record with the
    # database's copy and names the line.
    cwd = copy_of(good_dir, tmp_path)
    edited_last_record(cwd)
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]
    assert "is not the database's copy of it" in line and "`ffe doctor` names the line" in line, line
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = len((cwd / "logs" / "audit.jsonl").read_bytes().splitlines())
    assert f"audit.jsonl:{lines}" in doctor.stdout + doctor.stderr, doctor.stdout + doctor.stderr


@pytest.mark.parametrize("partial", [True, False], ids=["copying", "moved_aside"])
def test_a_restore_killed_half_way_stops_the_start_rather_than_a_fresh_account(good_dir, tmp_path, partial):
    """A restore moves the records there aside, then puts the backup's in place; killed between the two (SIGKILL,
    a power cut) it leaves no database and no trail, only its own files. A start there is no first start: it is
    refused in one line naming them, and nothing is created over them."""
    cwd = copy_of(good_dir, tmp_path)
    data, logs = cwd / "data", cwd / "logs"
    os.replace(data / "ffe.db", data / "ffe.db.before-restore-20261204T100000Z")
    os.replace(logs / "audit.jsonl", logs / "audit.jsonl.before-restore-20261204T100000Z")
    if partial:
        (data / "ffe.db.restoring").write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000)
    before = sorted(p.name for p in data.iterdir()), sorted(p.name for p in logs.iterdir())
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffe: error: ") and "restore" in lines[0], proc.stderr
    assert "ffe.db.before-restore-20261204T100000Z" in lines[0], lines[0]
    assert (sorted(p.name for p in data.iterdir()), sorted(p.name for p in logs.iterdir())) == before


def test_a_damaged_database_beside_its_wal_is_left_as_it_was_found_wal_included(good_dir, tmp_path):
    """A refused start closes its connection to the damaged file without a checkpoint: the WAL's frames are not
    merged into the damaged file, and both are left as they were found (for a recovery tool, or the post-mortem)."""
    cwd = copy_of(good_dir, tmp_path)
    db = half_cut_beside_its_wal(cwd)
    wal = db.with_name("ffe.db-wal")
    before = db.read_bytes(), wal.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=30)
    assert_one_line(proc, "ffe.db", "Page ")
    assert wal.exists(), "the WAL was merged into the damaged file and removed"
    assert (db.read_bytes(), wal.read_bytes()) == before, "the damaged database was changed"


def killed_mid_transaction(db: Path, *statements: str) -> None:
    """A process that runs `statements` in one transaction on `db` (journal mode DELETE, the database's as a new or
    restored one is) and is killed before it commits, its pages already spilled to the file: a hot journal beside
    it, which SQLite rolls back at the next open that may write."""
    script = ("import os, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "c.execute('PRAGMA cache_size=1')  # the transaction's pages spill to the file before it commits\n"
              "c.execute('BEGIN')\n"
              "for sql in sys.argv[2:]: c.execute(sql)\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", script, str(db), *statements], check=True)


def test_a_first_start_killed_in_its_first_moment_leaves_a_journal_the_next_start_rolls_back(tmp_path):
    """Killed while its first transaction was under way (before the database is put in WAL mode): the database
    beside a hot rollback journal, which SQLite rolls back at the next open that may write. It is no damage: the
    next start rolls it back and starts the account afresh (it never had a record), as before the start's checks
    were read-only, not refused for good as a database it "cannot write"."""
    starter_config(tmp_path)
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "ffe.db"
    killed_mid_transaction(db, *(f"CREATE TABLE t{i} (a)" for i in range(40)),
                           "INSERT INTO t0 VALUES (randomblob(300000))")
    assert (tmp_path / "data" / "ffe.db-journal").stat().st_size > 0 and db.stat().st_size > 0
    # Read before that start: not called damaged (nor "restore it from a backup"), and config check does not say the
    # start will stop on it.
    for command in (("report", "trades"), ("audit", "show", "1")):
        proc = run_ffe(tmp_path, *command)
        assert proc.returncode != 0 and "the next start rolls it back" in proc.stderr, (command, proc.stderr)
        assert "damaged" not in proc.stderr, (command, proc.stderr)
    proc = run_ffe(tmp_path, "config", "check")
    assert proc.returncode == 0 and "the next start rolls it back" in proc.stdout, proc.stdout[-500:]
    assert "will stop on it" not in proc.stdout
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "data" / "ffe.db-journal").exists()
    assert ffe_in_process(tmp_path, "doctor").returncode == 0


def restored_in_journal_mode_delete(good_dir: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """A copy of an account whose database is in journal mode DELETE, as a restored one is until its first start:
    the copy, its database and how many fills it holds."""
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    conn.close()
    return cwd, db, fills


def test_a_hot_journal_beside_a_database_with_records_is_rolled_back_and_the_records_kept(good_dir, tmp_path):
    """A restored database (journal mode DELETE until its first start) whose first start was killed while it put
    WAL back: the rollback journal is rolled back by the next start, whose checks then read the records as they
    were, never started over."""
    cwd, db, fills = restored_in_journal_mode_delete(good_dir, tmp_path)
    killed_mid_transaction(db, "DELETE FROM fills", "CREATE TABLE filler (a)",
                           "INSERT INTO filler VALUES (randomblob(300000))")
    assert (cwd / "data" / "ffe.db-journal").stat().st_size > 0
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] >= fills > 0


def test_a_journal_whose_header_sqlite_zeroed_is_no_transaction_and_stops_nothing(good_dir, tmp_path):
    """Killed once its transaction was done and the journal's header zeroed, before the journal was deleted (a
    restored database's first start putting WAL back): SQLite takes such a journal for none. Neither does the start
    (it refused it for ever, as a transaction the next start would roll back), nor doctor."""
    cwd, db, fills = restored_in_journal_mode_delete(good_dir, tmp_path)
    (cwd / "data" / "ffe.db-journal").write_bytes(b"\0" * 28 + os.urandom(4588))  # as SQLite leaves it: header zeroed
    assert ffe_in_process(cwd, "doctor").returncode == 0
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0] >= fills > 0


async def _restarted(cwd: Path, starts: int, hook_url: str) -> list[subprocess.CompletedProcess]:
    """`ffe run --headless` started `starts` times one after the other, as systemd restarts a failing service."""
    import asyncio

    env = ffe_env(FFE_ALERTS__WEBHOOK_URL=hook_url)
    return [await asyncio.to_thread(run_ffe, cwd, "run", "--headless", "--max-bars", "5", env=env)
            for _ in range(starts)]


async def test_a_damaged_database_under_a_restart_loop_pages_start_failed_once_per_window(good_dir, tmp_path):
    """A damaged database fails every start the same way as systemd restarts the service (five starts in ten
    minutes): nothing of it can be recorded, the alerts' outbox neither, yet the operator is paged once per
    `alerts.window_s`, not once per restart. Each start still says it on its own stderr."""
    from receiver import Receiver

    cwd = copy_of(good_dir, tmp_path)
    garbage(cwd / "data" / "ffe.db")
    hook = await Receiver().start()
    try:
        procs = await _restarted(cwd, 3, hook.url + "/hook")
    finally:
        await hook.stop()
    for proc in procs:
        assert proc.returncode == 1 and "the database is damaged" in proc.stderr, proc.stderr
    pages = [r.body for r in hook.delivered if r.body.get("severity") == "page"]
    assert [p["kind"] for p in pages] == ["START_FAILED"], [r.body for r in hook.delivered]
    assert "the database is damaged" in pages[0]["text"], pages


async def test_a_restart_loop_pages_at_every_start_when_the_alerts_it_sent_cannot_be_kept(good_dir, tmp_path):
    """Where the alerts sent are kept across a restart cannot be written either (a directory in the way of its
    file): every start pages, rather than none."""
    from receiver import Receiver

    cwd = copy_of(good_dir, tmp_path)
    garbage(cwd / "data" / "ffe.db")
    (cwd / "data" / "ffe.alerts-sent").mkdir()
    hook = await Receiver().start()
    try:
        procs = await _restarted(cwd, 2, hook.url + "/hook")
    finally:
        await hook.stop()
    assert [p.returncode for p in procs] == [1, 1], [p.stderr for p in procs]
    pages = [r.body for r in hook.delivered if r.body.get("severity") == "page"]
    assert [p["kind"] for p in pages] == ["START_FAILED", "START_FAILED"], [r.body for r in hook.delivered]


async def test_a_damaged_database_after_a_start_that_succeeded_is_paged_again(good_dir, tmp_path):
    """START_FAILED on a damaged database is held back within `alerts.window_s` only while no start gets through:
    the database put back, a start that succeeded, then the database damaged again the same way is news, paged."""
    from receiver import Receiver

    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    whole = db.read_bytes()
    hook = await Receiver().start()
    try:
        garbage(db)
        [refused] = await _restarted(cwd, 1, hook.url + "/hook")
        db.write_bytes(whole)
        [started] = await _restarted(cwd, 1, hook.url + "/hook")
        for stale in ("ffe.db-wal", "ffe.db-shm"):
            (cwd / "data" / stale).unlink(missing_ok=True)
        garbage(db)
        [again] = await _restarted(cwd, 1, hook.url + "/hook")
    finally:
        await hook.stop()
    assert [p.returncode for p in (refused, started, again)] == [1, 0, 1], [started.stderr[-3000:]]
    pages = [r.body for r in hook.delivered if r.body.get("kind") == "START_FAILED"]
    assert len(pages) == 2 and all("the database is damaged" in p["text"] for p in pages), pages


def test_a_damaged_sqlite_sequence_stops_the_start_in_one_line_and_fails_doctor(good_dir, tmp_path):
    """One byte of the schema's text changed, so that AUTOINCREMENT's own table no longer has its `seq` column:
    the integrity check passes (it is text), and the start read the largest trade id from it and died on a
    traceback while `ffe doctor` said ok. Both now say it in one line, nothing changed."""
    cwd = copy_of(good_dir, tmp_path)
    db = cwd / "data" / "ffe.db"
    data = bytearray(db.read_bytes())
    at = data.find(b"sqlite_sequence(name,seq)")
    assert at >= 0
    data[at + len("sqlite_sequence(name,s")] ^= 0xFF
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=30)
    assert_one_line(proc, "ffe.db", "damaged", "table sqlite_sequence has no column seq")
    assert "Traceback" not in proc.stderr and db.read_bytes() == before
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 1 and "table sqlite_sequence has no column seq" in doctor.stderr, doctor.stderr


def test_a_database_file_removed_under_a_running_engine_stops_it_halted_and_is_written_back(tmp_path, spawn_ffe):
    """`rm data/ffe.db` while the engine runs (a slip in a cleanup): SQLite goes on writing into the removed file,
    which vanishes with the process, and a start would find no database. The engine stops within seconds, HALTED
    (exit 1, one line saying so), and writes its records back to data/ffe.db: nothing recorded is lost, doctor
    passes, and the next start comes up HALTED."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: count_events(db, "decision") > 5, timeout=60, what="decisions recorded")
    db.unlink()
    assert engine.wait(60) == 1, engine.stderr[-3000:]
    assert "the database file was removed while the engine ran" in engine.stderr, engine.stderr[-3000:]
    assert "records were written back" in engine.stderr, engine.stderr[-3000:]
    assert db_rows(db, "SELECT state FROM engine_state") == [("HALTED",)]
    assert not list(db.parent.glob("ffe.db.saved-*"))
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "2")
    assert again.returncode == 0 and "state=HALTED" in again.stderr, again.stderr[-3000:]


def test_a_database_file_replaced_under_a_running_engine_keeps_its_records_beside_the_new_one(tmp_path, spawn_ffe):
    """Another file put where the database was (removed, then something written there): the engine stops HALTED,
    and its records are saved beside it, `ffe.db.saved-TIME`, the file in its place left as it is."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    db = tmp_path / "data" / "ffe.db"
    db.unlink()
    db.write_bytes(b"someone else's file")
    assert engine.wait(60) == 1, engine.stderr[-3000:]
    assert "the database file was replaced by another file" in engine.stderr, engine.stderr[-3000:]
    assert db.read_bytes() == b"someone else's file"
    (saved,) = db.parent.glob("ffe.db.saved-*")
    assert db_rows(saved, "SELECT state FROM engine_state") == [("HALTED",)]
    assert str(saved) in engine.stderr or saved.name in engine.stderr, engine.stderr[-3000:]


async def test_a_database_file_removed_while_the_engine_stops_is_written_back(tmp_path):
    """Removed after the engine's last look at it (its stop under way): the store's close looks once more, and the
    records are written back all the same."""
    from conftest import engine_session, make_settings

    settings = make_settings(tmp_path)
    async with engine_session(settings) as running:
        await running.engine.flush()
        settings.db_path.unlink()
    assert db_rows(settings.db_path, "SELECT COUNT(*) FROM events")[0][0] > 0
    assert not list(settings.db_path.parent.glob("ffe.db.saved-*"))


@pytest.mark.parametrize("how", ["emptied", "a smaller database copied over it"])
def test_a_database_file_written_over_under_a_running_engine_stops_it(tmp_path, spawn_ffe, how):
    """`: > data/ffe.db`, or another SQLite file copied onto it (same inode): what the engine would read and write is
    no longer the account's. It stops within seconds, exit 1, saying the database is damaged, instead of trading on
    with its records going nowhere and a kill switch failing on a malformed database."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    db = tmp_path / "data" / "ffe.db"
    wait_until(lambda: count_events(db, "decision") > 5, timeout=60, what="decisions recorded")
    with contextlib.closing(sqlite3.connect(db)) as conn:  # its records in the file itself, as a while of running
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    time.sleep(2.5)  # a look or two of the engine's at the file's size since
    if how == "emptied":
        with open(db, "r+b") as f:
            f.truncate(0)
    else:  # a smaller one: the account's only grows while the engine has it open
        other = tmp_path / "other.db"
        with contextlib.closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE notes (x)")
            conn.commit()
        with open(db, "r+b") as f:
            f.write(other.read_bytes())
            f.truncate()
    assert engine.wait(60) == 1, engine.stderr[-3000:]
    # Seen by the engine's look at the file, or by SQLite as the engine next reads a page of it.
    assert "the database is damaged" in engine.stderr, engine.stderr[-3000:]
    assert "written over" in engine.stderr or "met while the engine ran" in engine.stderr, engine.stderr[-3000:]
    assert "Traceback" not in engine.stderr, engine.stderr[-3000:]
