"""An engine_state row that says another state than the account's records (a HALTED account's row set to RUNNING
by hand, or deleted): the start and `ffe doctor` refuse it; so do `ffe backup` and `ffe backup verify`, and the
runbook's way out, `ffe restore --force` of a backup, keeps the HALTED the records say (runbook.md, Restore):
restored RUNNING, the account would trade again though its kill switch was pressed.

Real parts: `ffe` processes (a headless engine halted by `ffe ctl halt`, backup, verify, restore, doctor) on real
SQLite files, edited with sqlite3 as an operator would."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import db_rows, ffe_env, run_ffe, wait_until
from test_backup import repack, unpack

from ffe_engine import backup as bk

EDITS = {"set RUNNING": "UPDATE engine_state SET state = 'RUNNING', reason = 'x'",
         "deleted": "DELETE FROM engine_state"}


def halted_after_a_backup(cwd: Path, spawn_ffe) -> Path:
    """An account that traded, backed up RUNNING, then halted with `ffe ctl halt` and stopped: the backup."""
    cwd.mkdir()
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "30").returncode == 0
    backup = run_ffe(cwd, "backup", "--to", "b")
    assert backup.returncode == 0, backup.stderr
    (path,) = (cwd / "b").glob("ffe-backup-*.tar.zst")
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    halt = run_ffe(cwd, "ctl", "halt")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
    return path


def edit(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.parametrize("how", EDITS)
def test_a_restore_over_a_halted_account_whose_state_row_was_edited_keeps_it_halted(tmp_path, spawn_ffe, how):
    cwd = tmp_path / "acct"
    backup = halted_after_a_backup(cwd, spawn_ffe)
    edit(cwd / "data" / "ffe.db", EDITS[how])
    assert run_ffe(cwd, "doctor").returncode == 1

    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout, proc.stdout
    [(state, reason)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason FROM engine_state")
    assert state == "HALTED", (state, reason)
    assert "kill switch" in reason or "ctl" in reason, reason


def test_a_backup_of_a_state_row_set_running_over_a_halt_is_refused_and_so_is_its_verify(tmp_path, spawn_ffe):
    cwd = tmp_path / "acct"
    halted_after_a_backup(cwd, spawn_ffe)
    good = run_ffe(cwd, "backup", "--to", "c")
    assert good.returncode == 0, good.stderr
    (halted,) = (cwd / "c").glob("ffe-backup-*.tar.zst")
    edit(cwd / "data" / "ffe.db", EDITS["set RUNNING"])

    proc = run_ffe(cwd, "backup", "--to", "d")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "engine_state row says RUNNING (x)" in line and "says HALTED" in line, line
    assert not (cwd / "d").exists() or not list((cwd / "d").iterdir())

    work = tmp_path / "x"  # the same edit in a backup's own database
    unpack(halted, work)
    edit(work / bk.DB_NAME, EDITS["set RUNNING"])
    bad = repack(work, tmp_path / "bad.tar.zst")
    verify = run_ffe(cwd, "backup", "verify", str(bad))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "engine_state row says RUNNING (x)" in verify.stderr, verify.stderr


def stopped_after_a_backup(cwd: Path, spawn_ffe, *asks: tuple[str, ...], env: dict | None = None,
                           until: Callable[[], Any] | None = None) -> Path:
    """An account backed up RUNNING in auto approval, then run again with `ffe ctl ASK` for each of `asks` (and
    until `until()`) and stopped: the backup."""
    cwd.mkdir()
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "30").returncode == 0
    assert run_ffe(cwd, "backup", "--to", "b").returncode == 0
    (backup,) = (cwd / "b").glob("ffe-backup-*.tar.zst")
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20", **(env or {})))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    for ask in asks:
        asked = run_ffe(cwd, "ctl", *ask)
        assert asked.returncode == 0, asked.stdout + asked.stderr
    if until is not None:
        wait_until(until, timeout=60, what="the engine's own pause")
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
    return backup


ASKS = {"pause": [("pause",)], "manual approval": [("mode", "manual")],
        "both": [("pause",), ("mode", "manual")]}


@pytest.mark.parametrize("stop", ASKS)
def test_a_restore_over_an_account_paused_or_in_manual_approval_since_the_backup_keeps_it_from_trading(
        tmp_path, spawn_ffe, stop):
    """PAUSED, or manual approval set with `ffe ctl mode manual`, after the backup was taken: restored as the backup
    holds it, the account would trade at its next start as the operator had stopped it from trading. It is restored
    PAUSED, the restore's answer saying what to set again before the resume; doctor passes, the start stays PAUSED,
    and the operator's resume (after `ffe ctl mode manual` while paused) lifts it."""
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, *ASKS[stop])
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "the records this restore replaced were " in proc.stdout and "the restored account is PAUSED" in \
        proc.stdout, proc.stdout
    [(state, reason, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "restore"), (state, reason, by)
    assert ("ffe ctl pause" in reason) == (stop != "manual approval"), reason
    assert ("manual approval" in reason) == (stop != "pause"), reason
    assert run_ffe(cwd, "doctor").returncode == 0
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    assert db_rows(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == [("PAUSED",)]
    assert run_ffe(cwd, "ctl", "mode", "manual").returncode == 0  # set again while paused, as the reason says
    resumed = run_ffe(cwd, "ctl", "resume")
    assert resumed.returncode == 0 and "RUNNING" in resumed.stdout, resumed.stdout + resumed.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
    assert run_ffe(cwd, "doctor").returncode == 0


def test_a_restore_keeps_no_pause_the_engine_set_on_its_own(tmp_path, spawn_ffe):
    """A PAUSED a risk limit set (the drawdown past engine's risk.max_drawdown_pct) is no stop of the operator's:
    the account is restored as the backup holds it, and that limit pauses it again if it is still passed."""
    cwd = tmp_path / "acct"
    def paused_by_risk() -> bool:
        return db_rows(cwd / "data" / "ffe.db", "SELECT state, by FROM engine_state") == [("PAUSED", "risk")]

    backup = stopped_after_a_backup(cwd, spawn_ffe, env={"FFE_RISK__MAX_DRAWDOWN_PCT": "0.01"}, until=paused_by_risk)
    [(state, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, by FROM engine_state")
    assert (state, by) == ("PAUSED", "risk"), (state, by)
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "the records this restore replaced were" not in proc.stdout, proc.stdout
    assert db_rows(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == [("RUNNING",)]


@pytest.mark.parametrize("edit", ["UPDATE engine_state SET state = 'RUNNING', reason = 'x', by = 'x'",
                                  "DELETE FROM kv WHERE key = 'approval_mode'"])
def test_a_restore_over_damaged_records_keeps_the_operator_s_stops_their_events_say(tmp_path, spawn_ffe, edit):
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, ("pause",), ("mode", "manual"))
    edit_db = sqlite3.connect(cwd / "data" / "ffe.db", isolation_level=None)
    try:
        edit_db.execute(edit)
    finally:
        edit_db.close()
    assert run_ffe(cwd, "doctor").returncode == 1
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    [(state, reason)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason FROM engine_state")
    assert state == "PAUSED" and "ffe ctl pause" in reason and "manual approval" in reason, (state, reason)


def moved_by_hand(cwd: Path) -> None:
    """The runbook's step for a damaged database: moved aside with its -wal and -shm, out of the data directory."""
    (cwd / "moved").mkdir()
    for path in (cwd / "data").glob("ffe.db*"):
        path.rename(cwd / "moved" / path.name)


def cut_short_restore(cwd: Path) -> None:
    """What a restore killed while it put the files in place leaves: the records moved aside, none in their place."""
    for name in ("data/ffe.db", "logs/audit.jsonl"):
        (cwd / name).rename(cwd / f"{name}.before-restore-20261207T000000Z")


def older_copy_started(cwd: Path, older: Path) -> None:
    """An older copy of the database put back, then a start: it sets aside the records past the copy's last event
    (the operator's pause and mode among them) and comes up PAUSED for them; then stopped."""
    for path in (cwd / "data").glob("ffe.db*"):
        path.unlink()
    (cwd / "data" / "ffe.db").write_bytes(older.read_bytes())
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "2")
    assert "set aside" in proc.stderr, proc.stderr[-2000:]
    assert list((cwd / "logs").glob("audit.jsonl.uncommitted-after-*")), list((cwd / "logs").iterdir())


@pytest.mark.parametrize("layout", ["database moved aside by hand", "restore run again after one cut short",
                                    "stops only in records a start set aside"])
def test_a_restore_keeps_the_operator_s_stops_wherever_the_records_it_replaces_hold_them(tmp_path, spawn_ffe, layout):
    """As it keeps a HALTED: read from the trail past the backup's last event when no database is there, from the
    database an earlier restore moved aside, and from the records a start set aside that no resume has checked."""
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, ("pause",), ("mode", "manual"))
    if layout == "database moved aside by hand":
        moved_by_hand(cwd)
    elif layout == "restore run again after one cut short":
        cut_short_restore(cwd)
    else:
        work = tmp_path / "b"
        unpack(backup, work)
        older_copy_started(cwd, work / bk.DB_NAME)
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "the restored account is PAUSED" in proc.stdout, proc.stdout
    [(state, reason, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "restore"), (state, reason, by)
    assert "ffe ctl pause" in reason and "manual approval" in reason, reason
    assert run_ffe(cwd, "doctor").returncode == 0


def test_an_operator_s_pause_the_start_s_loss_pause_wrote_over_is_kept_by_the_restore(tmp_path, spawn_ffe):
    """Paused by the operator; an older copy of the database (still paused) put back; the start sets the records
    past it aside and pauses for the loss, by the engine, over the operator's pause. The restore the loss pause asks
    for keeps the operator's pause: an engine's own pause after it does not lift it, only a run does."""
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, ("pause",))
    older = tmp_path / "older.db"
    older.write_bytes((cwd / "data" / "ffe.db").read_bytes())
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "3").returncode == 0  # more records, still paused
    older_copy_started(cwd, older)
    [(state, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, by FROM engine_state")
    assert (state, by) == ("PAUSED", "engine"), (state, by)
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    [(state, reason, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "restore") and "ffe ctl pause" in reason, (state, reason, by)


@pytest.mark.parametrize("stop", ["halt", "pause"])
def test_a_state_record_damaged_in_the_trail_the_restore_reads_makes_it_halted_saying_why(tmp_path, spawn_ffe,
                                                                                          stop):
    """The database moved aside by hand, and the record of the operator's halt (or pause) in the trail past the
    backup's last event damaged: whether the records were HALTED cannot be told, so the restored account is HALTED,
    the restore saying why, not restored RUNNING as if the record were not there."""
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, (stop,))
    moved_by_hand(cwd)
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().split(b"\n")
    state = b'"state":"HALTED"' if stop == "halt" else b'"state":"PAUSED"'
    (at,) = [i for i, line in enumerate(lines) if b'"event":"engine_state"' in line and state in line]
    lines[at] = lines[at].replace(state, b'"state":"PAUSED\x00\xff')
    trail.write_bytes(b"\n".join(lines))
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    [(state_now, reason)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason FROM engine_state")
    assert state_now == "HALTED" and "could not be read" in reason, (state_now, reason)
    assert "could not be read" in proc.stdout, proc.stdout


def test_an_operator_s_pause_over_a_risk_limit_s_pause_is_recorded_and_kept_by_a_restore(tmp_path, spawn_ffe):
    """`ffe ctl pause` while a risk limit has the engine paused: the operator's stop is recorded (its event, the row
    by ctl), not answered PAUSED with nothing kept; a restore keeps it, as the limit's own pause it does not."""
    cwd = tmp_path / "acct"
    cwd.mkdir()
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "30").returncode == 0
    assert run_ffe(cwd, "backup", "--to", "b").returncode == 0
    (backup,) = (cwd / "b").glob("ffe-backup-*.tar.zst")
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20", FFE_RISK__MAX_DRAWDOWN_PCT="0.01"))
    wait_until(lambda: db_rows(cwd / "data" / "ffe.db", "SELECT state, by FROM engine_state") == [("PAUSED", "risk")],
               timeout=60, what="the risk limit's pause")
    asked = run_ffe(cwd, "ctl", "pause")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert db_rows(cwd / "data" / "ffe.db", "SELECT state, by FROM engine_state") == [("PAUSED", "ctl")]
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    [(state, reason, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "restore") and "by ctl" in reason, (state, reason, by)


def test_a_restore_run_again_over_a_restore_s_pause_says_the_operator_s_stops_once(tmp_path, spawn_ffe):
    """The restore kept the operator's PAUSED and manual approval with a PAUSED of its own; the operator restores the
    same backup again (a step of the runbook repeated). The pause is kept once more, its reason saying the stops the
    first restore found, not nested inside the words of the first restore's reason."""
    cwd = tmp_path / "acct"
    backup = stopped_after_a_backup(cwd, spawn_ffe, *ASKS["both"])
    assert run_ffe(cwd, "restore", str(backup), "--force").returncode == 0
    [(first,)] = db_rows(cwd / "data" / "ffe.db", "SELECT reason FROM engine_state")
    again = run_ffe(cwd, "restore", str(backup), "--force")
    assert again.returncode == 0, again.stderr
    [(state, reason, by)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason, by FROM engine_state")
    assert (state, by) == ("PAUSED", "restore"), (state, reason, by)
    assert reason == first, (first, reason)
    assert reason.count("the records this restore replaced were") == 1 and reason.count("manual approval") == 1
