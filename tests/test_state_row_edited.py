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


@pytest.mark.parametrize("stop", ["pause", "manual approval"])
def test_a_restore_over_an_account_paused_or_in_manual_approval_since_the_backup_keeps_it_from_trading(
        tmp_path, spawn_ffe, stop):
    """PAUSED, or manual approval set with `ffe ctl mode manual`, after the backup was taken: restored as the backup
    holds it, the account would trade at its next start as the operator had stopped it from trading. It is restored
    HALTED, the restore's answer saying what to set again before the re-arm."""
    cwd = tmp_path / "acct"
    cwd.mkdir()
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "30").returncode == 0
    assert run_ffe(cwd, "backup", "--to", "b").returncode == 0
    (backup,) = (cwd / "b").glob("ffe-backup-*.tar.zst")
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    asked = run_ffe(cwd, "ctl", "pause") if stop == "pause" else run_ffe(cwd, "ctl", "mode", "manual")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr

    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    said = "PAUSED" if stop == "pause" else "manual approval"
    assert f"the records this restore replaced were {'PAUSED' if stop == 'pause' else 'in manual approval'}" in \
        proc.stdout and "the restored account is HALTED" in proc.stdout, proc.stdout
    [(state, reason)] = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason FROM engine_state")
    assert state == "HALTED" and said in reason, (state, reason)
    assert run_ffe(cwd, "doctor").returncode == 0
    start = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert start.returncode == 0, start.stderr
    assert db_rows(cwd / "data" / "ffe.db", "SELECT state FROM engine_state") == [("HALTED",)]
