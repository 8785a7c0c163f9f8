"""The audit trail holds every event the database holds, in seq order, each seq once, whole lines only.

- While the engine trades, its audit lines are written no later than the database commits the same events: a
  headless engine frozen (SIGSTOP) or killed (SIGKILL) at any moment has no committed event missing from the file.
- At start, the trail is repaired from the database before anything else is written: missing records are appended,
  a torn last line is set aside in a side file (and the log says where).
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from conftest import (assert_strictly_increasing, audit_lines, db_rows, db_value, ffe_env, run_ffe, wait_until)


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
    for _ in range(60):
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send(signal.SIGSTOP)  # the file and the database as a SIGKILL now would leave them
        try:
            missing = set(db_seqs(db)) - whole_line_seqs(audit)
            assert not missing, f"committed but not in the audit file: {sorted(missing)[:10]}"
            checks += 1
        finally:
            proc.send(signal.SIGCONT)
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


def test_records_written_to_the_file_but_not_committed_are_not_given_a_seq_again(tmp_path):
    """The file is written before the database commits: a kill in between leaves the file ahead. The next start
    continues after the file's last seq, so no seq is used twice."""
    first_run(tmp_path)
    audit = tmp_path / "logs" / "audit.jsonl"
    last = json.loads(audit.read_bytes().split(b"\n")[-2])
    ahead = [dict(last, seq=last["seq"] + i, event="error", message="written, never committed") for i in (1, 2)]
    with open(audit, "ab") as f:
        for rec in ahead:
            f.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr
    records = assert_trail_holds_the_database(tmp_path)
    assert min(db_seqs(tmp_path / "data" / "ffe.db")[-3:]) > last["seq"] + 2
    assert len({r["seq"] for r in records}) == len(records)
