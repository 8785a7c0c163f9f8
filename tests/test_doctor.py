"""`ffe doctor`: a healthy data directory passes every check; each kind of damage is named, exit 1.

The records come from a real headless run; each damage is done to a copy of its files, as a crash, a bug or a
hand would do it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import ffe_env, ffe_in_process, run_ffe


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("healthy")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "150", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr
    return cwd


def copy_of(healthy: Path, tmp_path: Path) -> Path:
    shutil.copytree(healthy / "data", tmp_path / "data")
    shutil.copytree(healthy / "logs", tmp_path / "logs")
    return tmp_path


def sql(cwd: Path, statement: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(cwd / "data" / "ffe.db", isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def audit(cwd: Path) -> Path:
    return cwd / "logs" / "audit.jsonl"


def lines(cwd: Path) -> list[bytes]:
    return audit(cwd).read_bytes().split(b"\n")[:-1]


def write_lines(cwd: Path, new: list[bytes]) -> None:
    audit(cwd).write_bytes(b"\n".join(new) + b"\n")


def doctor(cwd: Path, ffe=run_ffe):
    return ffe(cwd, "doctor", "--data-dir", "data", "--log-dir", "logs")


def test_a_healthy_data_directory_passes_every_check(healthy):
    proc = doctor(healthy)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("ok: 12 checks passed"), out
    for name in ("integrity", "records", "audit trail", "audit chain", "order statuses", "fills", "closed trades",
                 "positions", "cash and equity", "paper venue book"):
        assert name in out
    n_orders = sql(healthy, "SELECT COUNT(*) FROM orders")[0][0]
    assert n_orders > 0 and f"{n_orders} orders" in out


# Each damage, and what the doctor must say about it.
def drop_a_middle_line(cwd):
    ls = lines(cwd)
    gone = json.loads(ls[len(ls) // 2])["seq"]
    write_lines(cwd, ls[: len(ls) // 2] + ls[len(ls) // 2 + 1:])
    return f"seq {gone} is in the database but not in the audit trail"


def lose_the_trail(cwd):
    """An account's trail gone (a live data directory's, unlike a backtest run's read without its log folder)."""
    audit(cwd).unlink()
    return "seq 1 is in the database but not in the audit trail (the file ends before it)"


def cut_the_last_line(cwd):
    """The line before the last cut, the last gone: more than a power loss's tear of the database's last record
    (which the next start repairs, and doctor says so)."""
    data = audit(cwd).read_bytes()
    before_last = data[:data.rstrip(b"\n").rfind(b"\n") + 1]
    audit(cwd).write_bytes(before_last[:-10])
    return "the last line is cut off"


def swap_two_lines(cwd):
    ls = lines(cwd)
    ls[10], ls[11] = ls[11], ls[10]
    write_lines(cwd, ls)
    return "seq must strictly increase"


def repeat_a_line(cwd):
    ls = lines(cwd)
    write_lines(cwd, ls[:20] + [ls[19]] + ls[20:])
    return "seq must strictly increase"


def garble_a_line(cwd):
    ls = lines(cwd)
    ls[5] = ls[5][:30]
    write_lines(cwd, ls)
    return ":6: not a JSON record"


def alter_a_record(cwd):
    ls = lines(cwd)
    rec = json.loads(ls[7])
    rec["ts"] = "1999-01-01T00:00:00Z"
    ls[7] = json.dumps(rec, separators=(",", ":")).encode()
    write_lines(cwd, ls)
    return f"seq {rec['seq']} differs from the database's record"


def alter_the_database_s_copy_of_a_record(cwd):
    # The trail's line is whole (its next line chains on from it); the database's copy is the damaged one, and the
    # operator is told which, not sent to mend the trail.
    ls = lines(cwd)
    rec = json.loads(ls[7])
    rec["ts"] = "1999-01-01T00:00:00Z"
    sql(cwd, "UPDATE events SET data = ? WHERE seq = ?", (json.dumps(rec, separators=(",", ":")).encode(), rec["seq"]))
    return f"seq {rec['seq']} differs from the database's record of it: the database's record is the damaged one"


def alter_the_database_s_copy_of_the_last_record(cwd):
    # No record after it: the chain's head, stored with the database's last record, names the whole copy.
    rec = json.loads(lines(cwd)[-1])
    rec["ts"] = "1999-01-01T00:00:00Z"
    sql(cwd, "UPDATE events SET data = ? WHERE seq = ?", (json.dumps(rec, separators=(",", ":")).encode(), rec["seq"]))
    return (f"seq {rec['seq']} differs from the database's record of it: the database's record is the damaged one "
            "(the trail's line is the one the chain's head names)")


def alter_a_record_s_line(cwd):
    alter_a_record(cwd)
    rec = json.loads(lines(cwd)[7])
    return f"seq {rec['seq']} differs from the database's record of it: the trail's line is the damaged one"


def rewrite_a_record_in_the_trail_and_the_database_alike(cwd):
    # The byte-for-byte comparison cannot see it; the hash chain can (the next line carries the old line's hash).
    ls = lines(cwd)
    rec = json.loads(ls[7])
    rec["ts"] = "1999-01-01T00:00:00Z"
    ls[7] = json.dumps(rec, separators=(",", ":")).encode()
    write_lines(cwd, ls)
    sql(cwd, "UPDATE events SET data = ? WHERE seq = ?", (ls[7], rec["seq"]))
    return f"audit chain broken at seq {rec['seq']}: "


def reopen_a_filled_order(cwd):
    (cid,) = sql(cwd, "SELECT client_order_id FROM orders WHERE status = 'filled' LIMIT 1")[0]
    sql(cwd, "UPDATE orders SET status = 'open' WHERE client_order_id = ?", (cid,))
    return f"order {cid} is open in the journal, filled in the audit trail"


def unknown_status(cwd):
    (cid,) = sql(cwd, "SELECT client_order_id FROM orders LIMIT 1")[0]
    sql(cwd, "UPDATE orders SET status = 'lost' WHERE client_order_id = ?", (cid,))
    return f"table orders, order {cid}: status 'lost' is not an order status"


def lose_a_fill(cwd):
    (fid, cid) = sql(cwd, "SELECT id, client_order_id FROM fills WHERE side = 'buy' ORDER BY id DESC LIMIT 1")[0]
    sql(cwd, "DELETE FROM fills WHERE id = ?", (fid,))
    return f"a fill event of order {cid} (buy "


def as_an_older_ffe_left_it(cwd):
    # A gap among the events is a lost record in a database of this ffe's (named first, as such: test_audit_trail_
    # complete.py); in one an older ffe left (schema version 5), which went on after records it never committed, it
    # is only noted, and what the missing event leaves unaudited is what the checks name.
    sql(cwd, "DELETE FROM kv WHERE key = 'events_whole_after'")
    sql(cwd, "PRAGMA user_version = 5")


def lose_a_fill_and_its_event(cwd):
    (fid, cid) = sql(cwd, "SELECT MAX(id), client_order_id FROM fills GROUP BY client_order_id HAVING COUNT(*) = 1 "
                          "ORDER BY MAX(id) DESC LIMIT 1")[0]
    sql(cwd, "DELETE FROM fills WHERE id = ?", (fid,))
    (seq,) = sql(cwd, "SELECT MAX(seq) FROM events WHERE event = 'fill' AND instr(data, ?)", (cid.encode(),))[0]
    sql(cwd, "DELETE FROM events WHERE seq = ?", (seq,))  # the trail may hold more than the database: allowed
    as_an_older_ffe_left_it(cwd)
    return f"order {cid} filled "


def lose_a_fill_event(cwd):
    # The fill stays in the books, its event is gone from the database (the trail may hold lines the database
    # does not, written just before a kill): the fill was never audited as committed.
    (cid,) = sql(cwd, "SELECT client_order_id FROM fills ORDER BY id LIMIT 1")[0]
    (seq,) = sql(cwd, "SELECT MIN(seq) FROM events WHERE event = 'fill' AND instr(data, ?)", (cid.encode(),))[0]
    sql(cwd, "DELETE FROM events WHERE seq = ?", (seq,))
    as_an_older_ffe_left_it(cwd)
    return f"order {cid} has a "


def charge_a_fill_twice(cwd):
    cols = [r[1] for r in sql(cwd, "PRAGMA table_info(fills)") if r[1] != "id"]
    (cid,) = sql(cwd, "SELECT client_order_id FROM fills ORDER BY id LIMIT 1")[0]
    sql(cwd, f"INSERT INTO fills ({','.join(cols)}) SELECT {','.join(cols)} FROM fills WHERE client_order_id = ? "
             "ORDER BY id LIMIT 1", (cid,))
    return f"order {cid} has a "


def halve_a_fill_s_price(cwd):
    # The fill's event is there, with the price the fill had: the line says what each holds, not that it is missing.
    (fid, side, qty, price) = sql(cwd, "SELECT id, side, quantity, price FROM fills ORDER BY id LIMIT 1")[0]
    sql(cwd, "UPDATE fills SET price = price / 2 WHERE id = ?", (fid,))
    return f"in the fills table, its fill event says {side} {qty:.10g} at {price:.10g}"


def change_a_closed_trade_s_pnl(cwd):
    # Its `position_closed` event (and `ffe audit show`) says one figure, the trades table (`ffe report`) another.
    (tid,) = sql(cwd, "SELECT id FROM trades ORDER BY id LIMIT 1")[0]
    sql(cwd, "UPDATE trades SET pnl = pnl + 100 WHERE id = ?", (tid,))
    return f"closed trade {tid}: pnl "


def lose_a_closed_trade(cwd):
    (tid,) = sql(cwd, "SELECT MAX(id) FROM trades")[0]
    sql(cwd, "DELETE FROM provider_scores WHERE trade_id = ?", (tid,))
    sql(cwd, "DELETE FROM trades WHERE id = ?", (tid,))
    return f"closed trade {tid} is in a position_closed event but not in the trades table"


def a_filled_order(cwd) -> str:
    return sql(cwd, "SELECT client_order_id FROM orders WHERE status = 'filled' ORDER BY created_ts LIMIT 1")[0][0]


# An order's row edited so that it contradicts its own `order` events and fills: named with the field.
def triple_an_order_s_quantity(cwd):
    cid = a_filled_order(cwd)
    sql(cwd, "UPDATE orders SET quantity = quantity * 3 WHERE client_order_id = ?", (cid,))
    return f"order {cid}: quantity "


def flip_an_order_s_side(cwd):
    cid = a_filled_order(cwd)
    sql(cwd, "UPDATE orders SET side = CASE side WHEN 'buy' THEN 'sell' ELSE 'buy' END WHERE client_order_id = ?",
        (cid,))
    return f"order {cid}: side "


def move_an_order_to_another_symbol(cwd):
    cid = a_filled_order(cwd)
    sql(cwd, "UPDATE orders SET symbol = CASE symbol WHEN 'ETH/USDT' THEN 'BTC/USDT' ELSE 'ETH/USDT' END "
             "WHERE client_order_id = ?", (cid,))
    return f"order {cid}: symbol "


def double_an_order_s_average(cwd):
    cid = a_filled_order(cwd)
    sql(cwd, "UPDATE orders SET average = average * 2 WHERE client_order_id = ?", (cid,))
    return f"order {cid}: average "


def multiply_an_order_s_fee(cwd):
    cid = a_filled_order(cwd)
    sql(cwd, "UPDATE orders SET fee = fee * 10 WHERE client_order_id = ?", (cid,))
    return f"order {cid}: fee "


def change_the_cash(cwd):
    book = json.loads(sql(cwd, "SELECT value FROM kv WHERE key = 'portfolio'")[0][0])
    book["cash"] += 0.5
    sql(cwd, "UPDATE kv SET value = ? WHERE key = 'portfolio'", (json.dumps(book),))
    return "stored cash"


def an_order_the_journal_never_had(cwd):
    book = json.loads(sql(cwd, "SELECT value FROM kv WHERE key = 'paper_venue'")[0][0])
    ghost = dict(book["orders"][0], client_order_id="ghost-1", exchange_id="P99999")
    book["orders"].append(ghost)
    sql(cwd, "UPDATE kv SET value = ? WHERE key = 'paper_venue'", (json.dumps(book),))
    return "the paper venue holds order ghost-1, which the journal never recorded"


def an_open_order_the_venue_forgot(cwd):
    # A journal entry says open (accepted by the venue) and nothing in the trail says otherwise; the venue's book
    # does not have it: what a kill between the accept and the book's write used to leave.
    cols = [r[1] for r in sql(cwd, "PRAGMA table_info(orders)")]
    row = dict(zip(cols, sql(cwd, "SELECT * FROM orders LIMIT 1")[0]))
    row.update(client_order_id="ffe-forgotten", status="open", filled=0.0, average=None, fee=0.0, exchange_id="P0")
    sql(cwd, f"INSERT INTO orders ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        tuple(row[c] for c in cols))
    return "order ffe-forgotten is open in the journal but the paper venue does not know it"


def damage_a_page(cwd):
    db = cwd / "data" / "ffe.db"
    sql(cwd, "PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = b"\xa5" * page
    db.write_bytes(bytes(data))
    return "ffe.db"


DAMAGES = [drop_a_middle_line, cut_the_last_line, swap_two_lines, repeat_a_line, garble_a_line, alter_a_record,
           alter_the_database_s_copy_of_a_record, alter_the_database_s_copy_of_the_last_record, alter_a_record_s_line,
           rewrite_a_record_in_the_trail_and_the_database_alike, reopen_a_filled_order, unknown_status, lose_a_fill,
           lose_a_fill_and_its_event, lose_a_fill_event, charge_a_fill_twice, halve_a_fill_s_price,
           change_a_closed_trade_s_pnl,
           lose_a_closed_trade, triple_an_order_s_quantity, flip_an_order_s_side, move_an_order_to_another_symbol,
           double_an_order_s_average, multiply_an_order_s_fee, change_the_cash,
           an_order_the_journal_never_had, an_open_order_the_venue_forgot, damage_a_page, lose_the_trail]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_each_violation_is_named_and_exits_1(healthy, tmp_path, damage):
    cwd = copy_of(healthy, tmp_path)
    expected = damage(cwd)
    proc = doctor(cwd, run_ffe if damage is DAMAGES[0] else ffe_in_process)  # the first as a real process
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ffe: error: "), proc.stderr
    assert expected in errors[0], errors[0]
    assert proc.stdout == ""


def test_a_line_being_written_after_the_database_s_last_event_is_no_violation(healthy, tmp_path):
    # Beside a running engine the trail's last line can be caught half written: the writer appends a batch of whole
    # lines, and a reader can see part of it (the record without its newline). Every event the database holds
    # was whole in the file before it was committed, so a cut line after them is a record not yet committed (or,
    # once the engine stopped, a torn tail the next start sets aside): the doctor passes and says so.
    cwd = copy_of(healthy, tmp_path)
    ls = lines(cwd)
    rec = json.loads(ls[-1])
    rec["seq"] += 1
    with open(audit(cwd), "ab") as f:
        f.write(json.dumps(rec, separators=(",", ":")).encode())  # no newline yet
    proc = doctor(cwd, ffe_in_process)  # a pass is proven as a real process above
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: 12 checks passed") and "1 line after the database's last event cut off" in (
        proc.stdout), proc.stdout


def test_a_database_a_newer_ffe_wrote_is_exit_2_as_for_the_start(healthy, tmp_path):
    """Its schema is one this release does not know: a start refuses it (exit 2, "newer"), and so does doctor,
    rather than call records it cannot read whole ok."""
    cwd = copy_of(healthy, tmp_path)
    with sqlite3.connect(cwd / "data" / "ffe.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    proc = doctor(cwd, run_ffe)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "schema version 99 is newer" in proc.stderr and proc.stdout == "", proc.stderr


def test_a_database_a_first_start_stopped_before_its_schema_is_no_records_here_not_damage(tmp_path):
    """A new account's first start killed between making the file and committing its schema: a database of no
    tables, no audit trail. The next start takes it for a first start; doctor says there are no records here (as
    for an empty file), not that the database is damaged ("no such table: kv")."""
    from conftest import starter_config

    starter_config(tmp_path)
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "ffe.db") as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # a file of SQLite's header, and no table
    doctor = ffe_in_process(tmp_path, "doctor")
    assert doctor.returncode == 2, (doctor.returncode, doctor.stderr)
    assert "no records here" in doctor.stderr and "no such table" not in doctor.stderr, doctor.stderr
    started = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert started.returncode == 0, started.stderr[-2000:]
    assert ffe_in_process(tmp_path, "doctor").returncode == 0


def test_a_database_of_no_table_beside_a_trail_with_records_is_lost_for_doctor_as_for_the_start(healthy, tmp_path):
    cwd = copy_of(healthy, tmp_path)
    for p in (cwd / "data").glob("ffe.db*"):
        p.unlink()
    with sqlite3.connect(cwd / "data" / "ffe.db") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    doctor = ffe_in_process(cwd, "doctor")
    assert doctor.returncode == 1 and "lost" in doctor.stderr and "holds no table" in doctor.stderr, doctor.stderr
    started = run_ffe(cwd, "run", "--headless", "--max-bars", "3")
    assert started.returncode == 1 and "lost" in started.stderr, started.stderr[-2000:]


def test_a_trade_id_given_again_after_its_row_was_deleted_is_named(healthy, tmp_path):
    # The newest closed trade's row deleted by hand, and the highest id given forgotten with it (an ffe that
    # numbered closed trades on from the highest id the table holds, or sqlite_sequence edited too): the next trade
    # closed gets the deleted one's id. Its row and its event then agree, and the lost trade is left as an earlier
    # `position_closed` event claiming the same id: doctor must find it.
    cwd = copy_of(healthy, tmp_path)
    (tid,) = sql(cwd, "SELECT MAX(id) FROM trades")[0]
    sql(cwd, "DELETE FROM provider_scores WHERE trade_id = ?", (tid,))
    sql(cwd, "DELETE FROM trades WHERE id = ?", (tid,))
    sql(cwd, "UPDATE sqlite_sequence SET seq = ? WHERE name = 'trades'", (tid - 1,))
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "150", env=ffe_env(FFE_MARKET__SEED=7))
    assert again.returncode == 0, again.stderr[-2000:]
    claims = sql(cwd, "SELECT seq FROM events WHERE event = 'position_closed' AND "
                      "json_extract(data, '$.trade_id') = ? ORDER BY seq", (tid,))
    assert len(claims) == 2 and sql(cwd, "SELECT COUNT(*) FROM trades WHERE id = ?", (tid,))[0][0] == 1
    proc = doctor(cwd, ffe_in_process)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"closed trade {tid} is claimed by two position_closed events" in errors[0], errors
    assert f"seq {claims[0][0]} and seq {claims[1][0]}" in errors[0], errors
