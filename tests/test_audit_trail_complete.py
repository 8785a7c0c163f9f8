"""The audit trail holds every event the database holds, in seq order, each seq once, whole lines only.

- While the engine trades, its audit lines are written no later than the database commits the same events: a
  headless engine frozen (SIGSTOP) or killed (SIGKILL) at any moment has no committed event missing from the file.
- At start, the trail is repaired from the database before anything else is written: missing records are appended,
  a torn last line is set aside in a side file (and the log says where).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import (assert_strictly_increasing, audit_lines, db_rows, db_value, ffe_env, run_ffe,
                      run_ffe_paging, wait_until)
from ffe_engine.chain import chained, line_hash
from ffe_engine.model import EngineState
from ffe_engine.store import keep_state, mark_restored


def db_seqs(db: Path) -> list[int]:
    return [r[0] for r in db_rows(db, "SELECT seq FROM events ORDER BY seq")]


def whole_line_seqs(path: Path) -> set[int]:
    """The seqs of the whole lines of an audit file that may be mid-write (an unfinished last line is ignored)."""
    return {json.loads(line)["seq"] for line in path.read_bytes().split(b"\n")[:-1] if line}


def assert_trail_holds_the_database(cwd: Path) -> list[dict]:
    records = audit_lines(cwd / "logs" / "audit.jsonl")
    seqs = [r["seq"] for r in records]
    assert_strictly_increasing(seqs)
    missing = sorted(set(db_seqs(cwd / "data" / "ffe.db")) - set(seqs))
    assert not missing, f"{len(missing)} committed events missing from the audit trail: {missing[:10]}"
    return records


def test_no_committed_event_is_ever_missing_from_the_audit_file_of_a_running_engine(tmp_path, spawn_ffe):
    rng = random.Random(11)
    db = tmp_path / "data" / "ffe.db"
    audit = tmp_path / "logs" / "audit.jsonl"
    proc = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SEED=7, FFE_ENGINE__WARMUP_BARS=50))
    wait_until(lambda: "engine started" in proc.stderr, timeout=60, what="the engine to start")
    wait_until(lambda: db_value(db, "SELECT COUNT(*) FROM orders"), timeout=60, what="the first order")
    checks = 0
    for _ in range(120):
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send(signal.SIGSTOP)  # the file and the database as a SIGKILL now would leave them
        try:
            try:
                committed = set(db_seqs(db))
            except sqlite3.OperationalError as exc:
                # Stopped in the middle of its write to the WAL index, the engine leaves a reader nothing consistent
                # to read until it goes on (SQLITE_PROTOCOL): this moment is looked at no further, another is.
                if "locking protocol" not in str(exc):
                    raise
                continue
            missing = committed - whole_line_seqs(audit)
            assert not missing, f"committed but not in the audit file: {sorted(missing)[:10]}"
            checks += 1
        finally:
            proc.send(signal.SIGCONT)
        if checks == 60:
            break
    assert checks == 60
    assert db_value(db, "SELECT COUNT(*) FROM fills") > 0
    proc.kill()
    missing = set(db_seqs(db)) - whole_line_seqs(audit)
    assert not missing, sorted(missing)[:10]


def test_after_sigkills_and_restarts_the_trail_is_complete_ordered_and_never_repeats_a_seq(tmp_path, spawn_ffe):
    rng = random.Random(5)
    db = tmp_path / "data" / "ffe.db"
    env = ffe_env(FFE_MARKET__SEED=7, FFE_ENGINE__WARMUP_BARS=50)
    for n in range(4):
        proc = spawn_ffe(tmp_path, "run", "--headless", env=env, name=f"run{n}")
        wait_until(lambda: "engine started" in proc.stderr, timeout=60, what="the engine to start")
        time.sleep(rng.uniform(0.2, 1.0))
        proc.kill()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=env)
    assert proc.returncode == 0, proc.stderr
    records = assert_trail_holds_the_database(tmp_path)
    assert db_value(db, "SELECT COUNT(*) FROM orders") > 0
    assert len(records) >= len(db_seqs(db))
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stderr


def first_run(tmp_path: Path) -> None:
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "40", env=ffe_env(FFE_MARKET__SEED=7))
    assert proc.returncode == 0, proc.stderr


def test_records_lost_from_the_end_of_the_file_are_appended_from_the_database_at_start(tmp_path):
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    lines = audit.read_bytes().split(b"\n")[:-1]
    audit.write_bytes(b"\n".join(lines[: len(lines) // 2]) + b"\n")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    records = assert_trail_holds_the_database(tmp_path)
    assert [json.dumps(r, separators=(",", ":")).encode() for r in records[: len(lines)]] == [
        json.dumps(json.loads(line), separators=(",", ":")).encode() for line in lines]
    assert "audit trail" in proc.stderr and "appended" in proc.stderr


def test_a_torn_last_line_is_set_aside_and_the_trail_continues_whole(tmp_path):
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    whole = audit.read_bytes()
    torn = b'{"ts":"2026-01-01T00:00:00Z","seq":99999,"event":"deci'
    audit.write_bytes(whole + torn)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert_trail_holds_the_database(tmp_path)
    assert audit.read_bytes().startswith(whole)
    aside = [p for p in audit.parent.iterdir() if p.name.startswith("audit.jsonl.torn")]
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    assert aside[0].name in proc.stderr


@pytest.mark.parametrize("after", [
    b'{"hello":"world"}\n',  # a whole line, no record
    b"hello world\n",
    b'{"ts":"2026-01-01T00:00:00Z","seq":99999,"event":"deci\n{"hello":"world"}\n',
], ids=["json", "text", "two-lines"])
def test_whole_lines_that_are_no_record_after_the_last_one_stop_the_start_and_are_left_as_found(tmp_path, after):
    """A kill leaves at most an unfinished last line: whole lines after the last record were written over it, and
    setting them aside as torn would let the trail verify as intact from then on."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    found = audit.read_bytes() + after
    audit.write_bytes(found)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr
    assert "logs/audit.jsonl: the line at byte " in proc.stderr and "written over" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert audit.read_bytes() == found
    assert not [p for p in audit.parent.iterdir() if ".torn" in p.name]
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode != 0, verify.stdout


def test_a_file_replaced_by_lines_that_are_no_records_stops_the_start(tmp_path):
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    audit.write_bytes(b"line one\nline two\n")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr
    assert "written over" in proc.stderr
    assert audit.read_bytes() == b"line one\nline two\n"


def semicolon(line: bytes) -> bytes:
    return line.replace(b'"event":', b'"event";', 1)


def zeros_inside(line: bytes) -> bytes:
    mid = len(line) // 2
    return line[:mid] + b"\0" * 20 + line[mid + 20:]


@pytest.mark.parametrize("edit", [semicolon, zeros_inside], ids=["a-byte-changed", "zeros-inside"])
def test_a_committed_last_record_edited_so_it_does_not_parse_stops_the_start_naming_its_seq(tmp_path, edit):
    """A kill leaves a cut end, never a whole line of the record's length that fails to parse: the last record, which
    the database committed, edited (one byte changed, zeros written inside it) and still ending in its newline, is
    damage, not a torn line. The start stops with one line naming the file and the seq, exit 1, the trail left as
    found; `ffe audit verify` and `ffe doctor` name the same seq."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    lines = audit.read_bytes().split(b"\n")[:-1]
    last = json.loads(lines[-1])["seq"]
    assert last == db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    found = b"".join(x + b"\n" for x in lines[:-1] + [edit(lines[-1])])
    audit.write_bytes(found)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "engine started" not in proc.stderr, proc.stderr[-3000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]
    assert line.startswith(f"ffe: error: {Path('logs') / 'audit.jsonl'}: the record of seq {last} is not the "
                           "database's copy of it (edited, or written over); it was left as it is"), line
    assert audit.read_bytes() == found
    assert not [p for p in audit.parent.iterdir() if ".torn" in p.name or ".uncommitted" in p.name]
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 1 and f"first bad seq {last}:" in verify.stdout, verify.stdout + verify.stderr
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 1 and f"audit.jsonl:{len(lines)}" in doctor.stdout + doctor.stderr, \
        doctor.stdout + doctor.stderr


def test_a_torn_last_line_closed_by_a_newline_is_still_set_aside(tmp_path):
    """A writer that opens a file whose last line was cut closes it with a newline first (sqlwriter.open_lines_file):
    one cut record ending in a newline is still a torn line."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    whole = audit.read_bytes()
    torn = b'{"ts":"2026-01-01T00:00:00Z","seq":99999,"event":"deci\n'
    audit.write_bytes(whole + torn)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert_trail_holds_the_database(tmp_path)
    aside = [p for p in audit.parent.iterdir() if p.name.startswith("audit.jsonl.torn")]
    assert len(aside) == 1 and aside[0].read_bytes() == torn


def test_a_torn_last_line_closed_by_a_newline_is_judged_by_verify_and_doctor_as_the_start_judges_it(tmp_path):
    """A record cut short after the database's last event and closed by a newline is what the start sets aside as a
    torn line: `ffe audit verify` and `ffe doctor` say it as they say an unfinished last line, not as damage."""
    first_run(tmp_path)
    last = db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    torn = b'{"ts":"2026-01-01T00:00:00Z","seq":%d,"event":"deci\n' % (last + 1)
    assert_judged_as_a_torn_tail(tmp_path, torn, f"an unfinished last line ({len(torn)} bytes")


def assert_judged_as_a_torn_tail(tmp_path: Path, appended: bytes, verify_says: str) -> None:
    """`appended` after the trail's last record (the database's last event): `ffe audit verify` says it
    (`verify_says`) and `ffe doctor` notes it, both exit 0, and the start sets it aside as a torn tail and starts."""
    audit = tmp_path / "logs" / "audit.jsonl"
    last = db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    audit.write_bytes(audit.read_bytes() + appended)
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify_says in verify.stdout, verify.stdout
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "1 line after the database's last event cut off" in doctor.stdout, doctor.stdout
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "logs" / f"audit.jsonl.torn-after-{last}").read_bytes() == appended


def append_uncommitted(audit: Path, records: list[dict]) -> list[bytes]:
    """Lines chained on from the trail's last one, as a kill between the audit write and the commit leaves them."""
    last = audit.read_bytes().split(b"\n")[-2] if audit.exists() and audit.stat().st_size else None
    prev = line_hash(last) if last is not None else line_hash(rotated_last(audit))
    out = []
    for rec in records:
        rec = {k: v for k, v in rec.items() if k != "prev"}
        line = chained(json.dumps(rec, separators=(",", ":")).encode(), prev)
        out.append(line)
        prev = line_hash(line)
    with open(audit, "ab") as f:
        f.write(b"".join(line + b"\n" for line in out))
    return out


@pytest.mark.parametrize("after", [[99999], [1, 3]], ids=["far-ahead", "a-gap-among-them"])
def test_records_ahead_whose_seq_does_not_go_on_from_the_database_s_stop_the_start_naming_the_seq(tmp_path, after):
    """Records a kill leaves after the database's last event go on from its seq, one by one: the store writes them
    in order, just before it would commit them. One whose seq does not (seq 99999 after seq N, or a gap among
    them) was written over the trail: the start stops with one line naming the file and the seq, exit 1, the trail
    left as found, nothing set aside under a name the database's last event does not give."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    last = db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    seqs = [s if s > 1000 else last + s for s in after]
    found = audit.read_bytes() + b"".join(json.dumps({"seq": s, "event": "x"}).encode() + b"\n" for s in seqs)
    audit.write_bytes(found)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "engine started" not in proc.stderr, proc.stderr[-3000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]
    before = seqs[-2] if len(seqs) > 1 else last
    assert line.startswith(f"ffe: error: {Path('logs') / 'audit.jsonl'}: seq {seqs[-1]} after seq {before}"), line
    assert "it was left as it is" in line, line
    assert audit.read_bytes() == found
    assert not [p for p in audit.parent.iterdir() if ".uncommitted" in p.name or ".torn" in p.name]
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 1 and "NOT intact" in verify.stdout, verify.stdout + verify.stderr


def rotated_last(audit: Path) -> bytes:
    (older,) = sorted(audit.parent.glob("audit-*.jsonl"))
    return older.read_bytes().split(b"\n")[-2]


def an_uncommitted_fill(cwd: Path, last_seq: int) -> list[dict]:
    """A fill and its order's status, copied from the last ones the database holds, as the next records."""
    db = cwd / "data" / "ffe.db"
    (fill,) = db_rows(db, "SELECT data FROM events WHERE event = 'fill' ORDER BY seq DESC LIMIT 1")
    (order,) = db_rows(db, "SELECT data FROM events WHERE event = 'order' ORDER BY seq DESC LIMIT 1")
    return [dict(json.loads(fill[0]), seq=last_seq + 1), dict(json.loads(order[0]), seq=last_seq + 2)]


def assert_trail_is_the_database(cwd: Path) -> None:
    """Every line of the trail is the database's record of the same seq, byte for byte, and the other way round."""
    logs = cwd / "logs"
    lines = b"".join(p.read_bytes() for p in [*sorted(logs.glob("audit-*.jsonl")), logs / "audit.jsonl"])
    trail = [(json.loads(line)["seq"], line) for line in lines.split(b"\n")[:-1]]
    events = [(seq, bytes(data)) for seq, data in db_rows(cwd / "data" / "ffe.db",
                                                            "SELECT seq, data FROM events ORDER BY seq")]
    assert [s for s, _ in trail] == [s for s, _ in events]
    assert trail == events


def fill_lines(cwd: Path) -> list[bytes]:
    logs = cwd / "logs"
    return [line for p in [*logs.glob("audit-*.jsonl"), logs / "audit.jsonl"]
            for line in p.read_bytes().split(b"\n") if b'"event":"fill"' in line]


@pytest.mark.parametrize("rotated", [False, True], ids=["same file", "after a rotation"])
def test_records_written_to_the_file_but_never_committed_are_set_aside_and_the_trail_goes_on_from_the_database(
        tmp_path, rotated):
    """The file is written before the database commits: a kill in between leaves lines the database never
    committed (here a fill and its order's status). They are no record of what happened: the checks report them,
    and the next start sets them aside, so the trail again ends where the database does and goes on from there,
    and the fill, recorded again once the venue is asked, is never in the trail twice."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    db = tmp_path / "data" / "ffe.db"
    fills = db_value(db, "SELECT COUNT(*) FROM fills")
    assert fills > 0
    last = db_seqs(db)[-1]
    if rotated:  # the uncommitted lines went into a new file, the committed ones are all in the rotated one
        audit.rename(tmp_path / "logs" / f"audit-{1:012d}.jsonl")
    ahead = append_uncommitted(audit, an_uncommitted_fill(tmp_path, last))
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(tmp_path, *check)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"2 records after the database's last event (seq {last})" in proc.stdout, proc.stdout
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    aside = tmp_path / "logs" / f"audit.jsonl.uncommitted-after-{last}"
    assert aside.read_bytes() == b"".join(line + b"\n" for line in ahead)
    assert aside.name in proc.stderr and "never committed" in proc.stderr
    assert_trail_is_the_database(tmp_path)
    assert last + 1 in db_seqs(db)  # seq and the chain go on from the database's head
    assert len(fill_lines(tmp_path)) == db_value(db, "SELECT COUNT(*) FROM fills")  # no fill twice
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 0 and "after the database's last event" not in verify.stdout, verify.stdout
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0 and "after the database's last event" not in doctor.stdout, doctor.stdout


def delete_event(db: Path, seq: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    conn.close()


def a_run_with_an_event_deleted(cwd: Path) -> tuple[Path, int]:
    """A run's database with one of its committed events (a decision's, from the middle) deleted: it, and the seq."""
    first_run(cwd)
    db = cwd / "data" / "ffe.db"
    (seq,) = db_rows(db, "SELECT seq FROM events WHERE event = 'decision' ORDER BY seq LIMIT 1 OFFSET 3")[0]
    delete_event(db, seq)
    return db, seq


def as_an_older_ffe_left_it(db: Path) -> None:
    """The database as an older ffe (schema version 5) left it: no seq from which its events run on unbroken."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM kv WHERE key = 'events_whole_after'")
        conn.execute("PRAGMA user_version = 5")
    conn.close()


def test_a_record_an_older_ffe_never_committed_inside_the_trail_is_reported_alike(tmp_path):
    """A trail an older ffe went on after a record the database never committed: every check names it the same."""
    db, seq = a_run_with_an_event_deleted(tmp_path)
    as_an_older_ffe_left_it(db)
    note = f"seq {seq} is in the audit trail but the database never committed it"
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(tmp_path, *check)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert note in proc.stdout, proc.stdout


def test_a_committed_record_deleted_from_inside_the_events_table_fails_every_check_and_the_start(tmp_path):
    """This ffe's start sets aside what the database never committed before it writes on: its events run on by one.
    A row missing from among them was committed, then lost (deleted, an older copy of the table): the doctor, the
    audit verify, a backup and a start each refuse it, naming the seq, and nothing is written over it."""
    db, seq = a_run_with_an_event_deleted(tmp_path)
    said = f"table events lacks seq {seq}"
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(tmp_path, *check)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and said in out, (check, out)
    proc = run_ffe(tmp_path, "backup", "--to", str(tmp_path / "backups"))
    assert proc.returncode == 1 and said in proc.stderr, proc.stdout + proc.stderr
    assert not list((tmp_path / "backups").glob("ffe-backup-*"))
    before = db.read_bytes(), (tmp_path / "logs" / "audit.jsonl").read_bytes()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a damaged database (docs/cli.md)
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert said in line and "data/ffe.db" in line, proc.stderr
    assert (db.read_bytes(), (tmp_path / "logs" / "audit.jsonl").read_bytes()) == before


@pytest.mark.parametrize("value", [None, "-5", "\"abc\"", "999999"], ids=["deleted", "negative", "text", "past"])
def test_the_seq_the_events_run_on_from_deleted_or_edited_is_damage_not_an_older_database(tmp_path, value):
    """Version 6 writes `events_whole_after` with its migration: a database of version 6 without it, or with a value
    that is no seq, lost or damaged that record, and a row deleted from among its events would pass as an older
    ffe's gap. Every check refuses it, naming the key."""
    db, _ = a_run_with_an_event_deleted(tmp_path)
    with sqlite3.connect(db) as conn:
        if value is None:
            conn.execute("DELETE FROM kv WHERE key = 'events_whole_after'")
        else:
            conn.execute("UPDATE kv SET value = ? WHERE key = 'events_whole_after'", (value,))
    conn.close()
    for check in (("doctor",), ("audit", "verify"), ("backup", "--to", "backups"), ("run", "--headless")):
        proc = run_ffe(tmp_path, *check)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "events_whole_after" in out, (check, out)
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").glob("ffe-backup-*"))


def test_an_older_database_runs_on_unbroken_from_its_first_start_on_this_ffe(tmp_path):
    """A database an older ffe left, its events with a gap it made: the start takes it (the gap is noted, as
    before), and from there on its events run on by one: a row deleted after that start is refused."""
    db, old = a_run_with_an_event_deleted(tmp_path)
    as_an_older_ffe_left_it(db)
    last = db_seqs(db)[-1]
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert db_value(db, "SELECT value FROM kv WHERE key = 'events_whole_after'") == str(last)
    proc = run_ffe(tmp_path, "doctor")
    assert proc.returncode == 0 and f"seq {old} is in the audit trail" in proc.stdout, proc.stdout + proc.stderr
    newer = db_seqs(db)[-3]
    assert newer > last
    delete_event(db, newer)
    proc = run_ffe(tmp_path, "doctor")
    assert proc.returncode == 1 and f"table events lacks seq {newer}" in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr)


def an_older_database_put_back(cwd: Path, backups: Path | None = None) -> Path:
    """Two runs, then the database as the first left it put back beside the trail of both (its WAL gone): the
    database lost the second run's committed records. Its path. With `backups`, a backup is taken there after each
    run: the newest holds what the database lost."""
    first_run(cwd)
    db = cwd / "data" / "ffe.db"
    older = db.read_bytes()
    if backups is not None:
        take_backup(cwd, backups)
    first_run(cwd)  # a second run, committed
    if backups is not None:
        take_backup(cwd, backups)
    db.write_bytes(older)
    for name in ("ffe.db-wal", "ffe.db-shm"):
        (cwd / "data" / name).unlink(missing_ok=True)
    return db


async def test_a_database_older_than_its_audit_trail_pages_the_operator_at_start(tmp_path):
    """Records set aside at a start are normally the last moment before a kill. A database that lost committed
    records (an older copy put back by hand, its write-ahead log deleted) leaves far more: a whole run, its fills.
    The start still sets them aside (they are kept in their file), and the operator is paged with what they hold
    and where, not only told in the log."""
    db = an_older_database_put_back(tmp_path)
    proc, hook = await run_ffe_paging(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    aside = next(p for p in (tmp_path / "logs").iterdir() if ".uncommitted-after-" in p.name)
    held = [json.loads(line) for line in aside.read_bytes().splitlines()]
    fills = sum(1 for r in held if r["event"] == "fill")
    assert fills > 0 and any(r["event"] == "run" for r in held)
    started = [r.body for r in hook.delivered if r.body.get("kind") == "STARTED"]
    assert len(started) == 1 and started[0]["severity"] == "page", [r.body for r in hook.delivered]
    text = started[0]["text"]
    assert f"{len(held)} audit records" in text and f"{fills} fills" in text and aside.name in text, text
    # Its books lack those fills: nothing new trades on them until the operator has looked (the stop-losses of what
    # it holds are still watched, as in any pause).
    (state, reason, by), = db_rows(db, "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "engine") and "lost committed records" in reason, (state, reason, by)
    assert "PAUSED" in text, text
    started_at = max(r["seq"] for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["event"] == "run"
                     and r["phase"] == "start")
    entries = [r for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["seq"] > started_at
               and r["event"] == "order" and r["side"] == "buy"]
    assert entries == [], entries


def records_after(cwd: Path) -> list[dict]:
    """The trail's records after the database's last event."""
    last = db_seqs(cwd / "data" / "ffe.db")[-1]
    return [r for r in audit_lines(cwd / "logs" / "audit.jsonl") if r["seq"] > last]


def assert_every_check_fails_naming_the_loss(cwd: Path, after: list[dict], backups: Path) -> None:
    """`ffe doctor` and `ffe audit verify` fail (exit 1) on what the start pages for, in the same words: how many
    records, their fills and order updates, and the remedy; and no backup is taken of the records that lack them."""
    fills = sum(1 for r in after if r["event"] == "fill")
    orders = sum(1 for r in after if r["event"] == "order")
    held = f"{len(after)} audit records the database does not hold ({fills} fills, {orders} order updates"
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(cwd, *check)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (check, out)
        assert held in out and "the database lost committed records" in out and "restore the newest backup" in out, (
            check, out)
        assert "written just before a kill" not in out, (check, out)
    proc = run_ffe(cwd, "backup", "--to", str(backups))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert held in proc.stderr and "restore the newest backup" in proc.stderr, proc.stderr
    assert not list(backups.glob("ffe-backup-*")), "a backup was taken of a database that lost committed records"


def test_a_database_older_than_its_audit_trail_fails_doctor_verify_and_backup_as_the_start_judges_it(tmp_path):
    """A whole run's records, its fills among them, after the database's last event are no kill's last moment: the
    database lost records it had committed. The checks the runbook sends the operator to after a crash say so, as
    the start's page does, rather than `ok` and a note that they were written just before a kill."""
    db = an_older_database_put_back(tmp_path)
    after = records_after(tmp_path)
    assert any(r["event"] == "run" for r in after) and any(r["event"] == "fill" for r in after)
    assert_every_check_fails_naming_the_loss(tmp_path, after, tmp_path / "backups")


def test_records_after_the_database_spanning_over_a_minute_are_lost_records_not_a_kill(tmp_path):
    """No run's start among them, but over a minute of records: more than the moment before a kill, for every
    check alike."""
    first_run(tmp_path)
    last = db_seqs(tmp_path / "data" / "ffe.db")[-1]
    fill, order = an_uncommitted_fill(tmp_path, last)
    ts = datetime.fromisoformat(fill["ts"].replace("Z", "+00:00")) + timedelta(seconds=90)
    order["ts"] = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    append_uncommitted(tmp_path / "logs" / "audit.jsonl", [fill, order])
    assert_every_check_fails_naming_the_loss(tmp_path, records_after(tmp_path), tmp_path / "backups")


def test_two_fills_after_the_database_are_lost_records_not_a_kill_however_close_in_time(tmp_path):
    """Every fill is committed in a transaction of its own, and the next one's records are written only after it:
    a kill leaves at most one fill the database never committed. Two, a second apart (a WAL lost or damaged a few
    seconds into a run, before SQLite's checkpoint), are fills the database had committed and lost: every check
    says so, as for records spanning a minute."""
    first_run(tmp_path)
    last = db_seqs(tmp_path / "data" / "ffe.db")[-1]
    fill, order = an_uncommitted_fill(tmp_path, last)
    again = [dict(fill, seq=last + 3), dict(order, seq=last + 4)]
    append_uncommitted(tmp_path / "logs" / "audit.jsonl", [fill, order, *again])
    after = records_after(tmp_path)
    assert sum(r["event"] == "fill" for r in after) == 2
    assert_every_check_fails_naming_the_loss(tmp_path, after, tmp_path / "backups")


def test_one_fill_after_the_database_is_the_moment_before_a_kill(tmp_path):
    """The most a kill leaves: one fill and its order's update, never committed; a note, not a loss."""
    first_run(tmp_path)
    last = db_seqs(tmp_path / "data" / "ffe.db")[-1]
    append_uncommitted(tmp_path / "logs" / "audit.jsonl", an_uncommitted_fill(tmp_path, last))
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(tmp_path, *check)
        assert proc.returncode == 0, (check, proc.stdout + proc.stderr)
        assert "written just before a kill" in proc.stdout + proc.stderr, (check, proc.stdout + proc.stderr)


def test_records_past_a_read_the_engine_beside_has_committed_since_are_no_loss_whatever_they_span(tmp_path):
    """A check beside a running engine reads the database, then walks the trail (a minute or more on a large
    account): the engine goes on committing meanwhile, restarts even. Records past that read which the database
    holds by the end of the walk were committed, not lost, whatever they span (a run's boundary among them here):
    no check may call them a loss."""
    from ffe_engine.chain import verify_trail
    from ffe_engine.store import events_end

    first_run(tmp_path)
    read = db_seqs(tmp_path / "data" / "ffe.db")  # what a check read, before the engine below ran
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", env=ffe_env(FFE_MARKET__SEED=7))
    assert again.returncode == 0, again.stderr
    result = verify_trail(tmp_path / "logs", None, committed=read)
    assert result.uncommitted is not None and result.uncommitted.ahead.boundary  # as read: a restart past it
    result.uncommitted.ahead.committed_since(events_end(tmp_path / "data" / "ffe.db"), read[-1])
    assert result.uncommitted.lost_records() is None


# A retention that keeps only the newest backup: a backup that went through would delete the others.
PRUNING = ffe_env(FFE_BACKUP__KEEP_LAST=1, FFE_BACKUP__KEEP_DAYS=0)


def take_backup(cwd: Path, backups: Path) -> Path:
    proc = run_ffe(cwd, "backup", "--to", str(backups), "--json")
    assert proc.returncode == 0, proc.stderr
    return Path(json.loads(proc.stdout)["file"])


def backup_files(backups: Path) -> list[str]:
    return sorted(p.name for p in backups.glob("ffe-backup-*"))


async def a_start_that_finds_the_loss(cwd: Path, backups: Path) -> Path:
    """The older database put back beside the trail of both runs (a backup taken after each), then a start: it
    sets the records the database lost aside and comes up PAUSED. The file they were set aside in."""
    db = an_older_database_put_back(cwd, backups)
    proc, _ = await run_ffe_paging(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    (state, reason), = db_rows(db, "SELECT state, reason FROM engine_state")
    assert state == "PAUSED" and "lost committed records" in reason, (state, reason)
    (aside,) = [p for p in (cwd / "logs").iterdir() if ".uncommitted-after-" in p.name]
    return aside


def assert_the_loss_stays_visible(cwd: Path, aside: Path, backups: Path) -> None:
    """The trail is level with the database again, yet `ffe doctor` fails naming the file the lost records were set
    aside in and the remedy, `ffe audit verify` says it, and `ffe backup` refuses in one line: nothing written, and
    retention (which would keep only the newest) prunes none of the older backups, the remedy."""
    before = backup_files(backups)
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert aside.name in doctor.stderr and "restore the newest backup" in doctor.stderr, doctor.stderr
    assert "resume" in doctor.stderr, doctor.stderr
    verify = run_ffe(cwd, "audit", "verify")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert aside.name in verify.stdout and "restore the newest backup" in verify.stdout, verify.stdout
    refused = run_ffe(cwd, "backup", "--to", str(backups), env=PRUNING)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ffe: error: "), refused.stderr
    assert aside.name in errors[0] and "no backup was written" in errors[0] and "resume" in errors[0], errors[0]
    assert backup_files(backups) == before, "a backup was written or pruned beside a loss nobody has dealt with"


async def test_a_loss_set_aside_at_a_start_fails_doctor_and_backup_until_the_operator_resumes(tmp_path, spawn_ffe):
    """The start moves the records the database lost into their file, so the trail is level with the database
    again: the checks must not call that `ok`, nor may a scheduled backup go through (retention would delete the
    backups that hold what was lost) until the operator has dealt with it: here, checked the books and resumed."""
    backups = tmp_path / "backups"
    aside = await a_start_that_finds_the_loss(tmp_path, backups)
    held = aside.read_bytes()
    assert_the_loss_stays_visible(tmp_path, aside, backups)
    # A running engine on it, still PAUSED: the backup it takes itself is refused alike.
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"), name="headless")
    wait_until(lambda: "engine started" in engine.stderr, timeout=60, what="the engine to start")
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("PAUSED",)]
    before = backup_files(backups)
    refused = run_ffe(tmp_path, "backup", "--to", str(backups), env=PRUNING)
    assert refused.returncode == 1 and aside.name in refused.stderr, refused.stdout + refused.stderr
    assert backup_files(backups) == before
    resumed = run_ffe(tmp_path, "ctl", "resume")
    assert resumed.returncode == 0, resumed.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait() == 0, engine.stderr
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert aside.read_bytes() == held, "the records set aside were changed"
    made = run_ffe(tmp_path, "backup", "--to", str(backups), "--json", env=PRUNING)
    assert made.returncode == 0, made.stderr
    assert backup_files(backups) == [Path(json.loads(made.stdout)["file"]).name]  # retention as configured
    # The next start, resumed books and all, trades as the operator decided: no pause for the same records.
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert db_rows(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == [("RUNNING",)]


async def test_a_restore_of_the_newest_backup_clears_a_loss_set_aside_at_a_start(tmp_path):
    backups = tmp_path / "backups"
    aside = await a_start_that_finds_the_loss(tmp_path, backups)
    held = aside.read_bytes()
    assert_the_loss_stays_visible(tmp_path, aside, backups)
    newest = backups / backup_files(backups)[-1]
    restored = run_ffe(tmp_path, "restore", str(newest), "--force")
    assert restored.returncode == 0, restored.stderr
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The records set aside are kept, moved aside with the trail they came from.
    kept = [p for p in (tmp_path / "logs").iterdir() if p.name.startswith(aside.name) and p != aside]
    assert not aside.exists() and [p.read_bytes() for p in kept] == [held], sorted(os.listdir(tmp_path / "logs"))
    assert any(p.name == aside.name + f".before-restore-{p.name.rsplit('-', 1)[-1]}" for p in kept)
    made = run_ffe(tmp_path, "backup", "--to", str(backups), "--json")
    assert made.returncode == 0, made.stderr


async def test_a_loss_found_by_a_start_on_a_halted_engine_stays_visible_while_it_is_halted(tmp_path):
    """A start that finds the loss on a HALTED engine keeps it HALTED (the stricter state): the records set aside
    are no less lost, and the checks say so as they do for the pause."""
    backups = tmp_path / "backups"
    db = an_older_database_put_back(tmp_path, backups)
    # HALTED stored on its own, as a restore keeps a halt (with its marker)
    mark_restored(db, {"backup": "ffe-backup-test.tar.zst", "taken_ms": 0}, 1.0)
    keep_state(db, EngineState.HALTED, "kill switch (kept across a restore)", 1.0)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert db_rows(db, "SELECT state FROM engine_state") == [("HALTED",)]
    (aside,) = [p for p in (tmp_path / "logs").iterdir() if ".uncommitted-after-" in p.name]
    assert_the_loss_stays_visible(tmp_path, aside, backups)


def test_doctor_after_a_start_refused_for_a_trail_written_over_notes_the_halt_it_stored(tmp_path):
    """The refused start stores HALTED without its event (the trail takes none): by design, as on a full disk. Once
    the trail is put right, `ffe doctor` says so as a note, not as damage, and `ffe backup` agrees."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    found = audit.read_bytes()
    audit.write_bytes(found + b"hello world\n")
    assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "5").returncode == 1
    audit.write_bytes(found)
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "HALTED" in doctor.stdout + doctor.stderr
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert db_value(tmp_path / "data" / "ffe.db", "SELECT state FROM engine_state") == "HALTED"


def test_a_record_after_the_database_s_last_event_that_does_not_chain_from_it_stops_the_start(tmp_path):
    """A record a kill leaves after the database's last event chains on from the database's last record: the store
    chains each record onto the one before it, which the database holds. One with the right seq but a `prev` that is
    not that record's hash was written over the trail: the start stops with one line naming the file and the seq,
    exit 1, the trail left as found, as `ffe doctor` and `ffe audit verify` call it."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    last = db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    rec = {"ts": "2026-01-01T00:00:00.000Z", "seq": last + 1, "event": "run", "phase": "start", "detail": {}}
    found = audit.read_bytes() + chained(json.dumps(rec, separators=(",", ":")).encode(), "1" * 64) + b"\n"
    audit.write_bytes(found)
    for check in (("doctor",), ("audit", "verify")):
        proc = run_ffe(tmp_path, *check)
        assert proc.returncode == 1 and "a line inserted or edited" in proc.stdout + proc.stderr, \
            proc.stdout + proc.stderr
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "engine started" not in proc.stderr, proc.stderr[-3000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("ffe: error: ")]
    assert line.startswith(f"ffe: error: {Path('logs') / 'audit.jsonl'}: seq {last + 1} does not chain on from "
                           f"seq {last}, the database's last event"), line
    assert "it was left as it is" in line, line
    assert audit.read_bytes() == found
    assert not [p for p in audit.parent.iterdir() if ".uncommitted" in p.name or ".torn" in p.name]


@pytest.mark.parametrize("after", [b"\n\n", b"   \n"], ids=["empty-lines", "spaces"])
def test_blank_lines_after_the_last_record_are_judged_by_verify_and_doctor_as_the_start_judges_them(tmp_path, after):
    """Blank bytes after the last record (what a power loss leaves) are a torn tail: the start sets them aside and
    starts; `ffe audit verify` and `ffe doctor` say so, exit 0, rather than calling them damage."""
    first_run(tmp_path)
    assert_judged_as_a_torn_tail(tmp_path, after, f"blank bytes after the last record ({len(after)} bytes")


@pytest.mark.parametrize("end", [b"", b"\0" * 200, b"\n"], ids=["no-newline", "zeros-after", "newline"])
def test_the_committed_last_record_torn_by_a_power_loss_is_judged_by_verify_and_doctor_as_the_start_judges_it(
        tmp_path, end):
    """A power loss can leave the start of the last record the database committed (then zeros): the start sets it
    aside as a torn line and appends that record from the database. `ffe audit verify` and `ffe doctor` say so,
    exit 0, rather than calling the trail cut short."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    lines = audit.read_bytes().split(b"\n")[:-1]
    last = json.loads(lines[-1])["seq"]
    assert last == db_value(tmp_path / "data" / "ffe.db", "SELECT MAX(seq) FROM events")
    torn = lines[-1][:60] + end
    audit.write_bytes(b"".join(x + b"\n" for x in lines[:-1]) + torn)
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"the start of seq {last}, which the database holds" in verify.stdout, verify.stdout
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"the start of seq {last}, which the database holds" in doctor.stdout, doctor.stdout
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "logs" / f"audit.jsonl.torn-after-{last - 1}").read_bytes() == torn
    assert run_ffe(tmp_path, "doctor").returncode == 0


def a_start_that_fails_after_setting_aside(cwd: Path) -> subprocess.CompletedProcess:
    """A start that sets aside the records after the database's last event, then fails (the monitor's port held by
    another process): as a crash loop's start, or one the OOM killer ends, leaves them."""
    import socket

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        port = str(held.getsockname()[1])
        proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", env=ffe_env(FFE_MONITOR__PORT=port))
    finally:
        held.close()
    assert proc.returncode == 1 and "monitor.port" in proc.stderr, proc.stderr
    assert list((cwd / "logs").glob("audit.jsonl.uncommitted-after-*")), "nothing set aside"
    return proc


@pytest.mark.parametrize("state", ["HALTED", "PAUSED"])
def test_a_stop_found_only_in_records_set_aside_holds_after_the_start_that_found_them_failed(tmp_path, state):
    """A halt (or pause) written to the trail and never committed, a kill between the two: the start that sets the
    record aside keeps the stop. When that start failed after setting it aside, the next one no longer saw it
    among its own records and came up RUNNING. A stop found in set-aside records no resume has checked holds at
    every start until the operator resumes."""
    first_run(tmp_path)
    db = tmp_path / "data" / "ffe.db"
    last = db_seqs(db)[-1]
    reason = "ffe ctl halt" if state == "HALTED" else "ffe ctl pause"
    append_uncommitted(tmp_path / "logs" / "audit.jsonl", [{
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "seq": last + 1,
        "event": "engine_state", "state": state, "previous": "RUNNING", "reason": reason, "by": "ctl",
        "restated": False}])
    a_start_that_fails_after_setting_aside(tmp_path)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    (now, why), = db_rows(db, "SELECT state, reason FROM engine_state")
    assert now == state and reason in why and "set aside" in why, (now, why)
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")  # restarted again, still unresumed
    assert again.returncode == 0, again.stderr
    assert db_rows(db, "SELECT state FROM engine_state") == [(state,)]
    started = max(r["seq"] for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["event"] == "run"
                  and r["phase"] == "start" and r["seq"] > last)
    entries = [r for r in audit_lines(tmp_path / "logs" / "audit.jsonl") if r["seq"] > started
               and r["event"] == "order" and r["side"] == "buy"]
    assert entries == [], entries


async def test_a_loss_set_aside_by_a_start_that_failed_is_paged_by_the_next(tmp_path):
    """The start that sets aside records a database lost pages what they hold. When it failed after setting them
    aside, the next start came up PAUSED for the loss but said it only as a warning, without the loss: an
    operator taking pages only never heard that fills were missing from the books."""
    an_older_database_put_back(tmp_path)
    a_start_that_fails_after_setting_aside(tmp_path)
    proc, hook = await run_ffe_paging(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    aside = next(p for p in (tmp_path / "logs").iterdir() if ".uncommitted-after-" in p.name)
    held = [json.loads(line) for line in aside.read_bytes().splitlines()]
    fills = sum(1 for r in held if r["event"] == "fill")
    started = [r.body for r in hook.delivered if r.body.get("kind") == "STARTED"]
    assert len(started) == 1 and started[0]["severity"] == "page", [r.body for r in hook.delivered]
    text = started[0]["text"]
    assert f"{len(held)} audit records" in text and f"{fills} fills" in text and aside.name in text, text
    assert "PAUSED" in text and "restore the newest backup" in text, text
