"""An audit trail damaged before its last records (a byte flipped, a line deleted, well before the end the start's
repair looks at), as an operator meets it: real paper runs, real files, `ffe` as real subprocesses, the alerts
sent to a real local webhook receiver.

- The start finds it in the current file's chain, says in one log line the file and the first bad seq and what to
  run, and the STARTED alert pages; it starts all the same (the database holds every record).
- A backup never holds a trail its own verify would refuse: a damaged line is the database's copy in the backup,
  counted and named in its output; a damaged line the database holds no copy of fails the backup, nothing
  written under a backup's name. Taken from a stopped directory and by a running engine alike.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import audit_lines, ffe_env, ffe_in_process, run_ffe, run_ffe_paging, wait_until

TRAIL = Path("logs") / "audit.jsonl"


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> Path:
    """A directory with config.toml, and the data and logs of a paper run that traded."""
    cwd = tmp_path_factory.mktemp("account")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "200", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return cwd


def copy_of(account: Path, cwd: Path) -> Path:
    shutil.copytree(account, cwd)
    return cwd


def damage(cwd: Path, how: str = "a byte in a record", at: float = 0.3) -> tuple[int, bytes]:
    """The trail damaged at about `at` of its length, well before its last records: the seq of the line damaged
    and the trail as it was before."""
    path = cwd / TRAIL
    before = path.read_bytes()
    lines = before.splitlines(keepends=True)
    n = int(len(lines) * at)
    assert n < len(lines) - 10
    seq = json.loads(lines[n])["seq"]
    if how == "a byte in a record":  # as `printf X | dd of=logs/audit.jsonl bs=1 seek=OFFSET conv=notrunc`
        lines[n] = flipped(lines[n])
    elif how == "a byte in its seq":
        lines[n] = lines[n].replace(f'"seq":{seq},'.encode(), f'"seq":{seq + 20},'.encode(), 1)  # 639 -> 659
    elif how == "a line deleted":
        del lines[n]
    elif how == "a line repeated":
        lines.insert(n + 1, lines[n])
    else:
        raise AssertionError(how)
    path.write_bytes(b"".join(lines))
    return seq, before


def db_seq_removed(cwd: Path, event: str = "position_opened") -> int:
    """An event record the database no longer holds, as an older ffe's trail may hold records the database never
    committed, the trail going on after them (the database as that ffe left it: schema version 5, no seq from which
    its events run on unbroken): the seq of a `position_opened` record well before the end."""
    db = sqlite3.connect(cwd / "data" / "ffe.db")
    with db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM events WHERE event = ? ORDER BY seq", (event,))]
        last = db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        seq = next(s for s in seqs if s < last - 50)
        db.execute("DELETE FROM events WHERE seq = ?", (seq,))
        db.execute("DELETE FROM kv WHERE key = 'events_whole_after'")
        db.execute("PRAGMA user_version = 5")
    db.close()
    return seq


def damage_seq(cwd: Path, seq: int) -> None:
    """A byte flipped in the record of `seq`."""
    path = cwd / TRAIL
    lines = path.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if json.loads(line)["seq"] == seq)
    lines[n] = flipped(lines[n])
    path.write_bytes(b"".join(lines))


def flipped(line: bytes) -> bytes:
    """The record `line` with one byte of its time changed: still JSON (a reader that skips its chain would take it),
    no longer the record that was chained."""
    at = line.index(b'"ts":"') + len(b'"ts":"') + 12  # a digit of the hour
    return line[:at] + (b"X" if line[at:at + 1] != b"X" else b"Y") + line[at + 1:]


def take(cwd: Path, to: Path, *extra: str):
    return run_ffe(cwd, "backup", "--to", str(to), *extra)


def unpacked_trail(path: Path, into: Path) -> bytes:
    from ffe_engine import backup as bk

    into.mkdir()
    bk.unpack(path, into)
    return (into / bk.TRAIL_NAME).read_bytes()


# ---------------------------------------------------------------------------------------------------- the start
async def test_a_start_on_a_trail_damaged_before_its_last_records_pages_and_names_the_file_and_seq(account, tmp_path):
    cwd = copy_of(account, tmp_path / "a")
    seq, _ = damage(cwd)
    proc, hook = await run_ffe_paging(cwd, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr  # the database holds every record: it starts
    said = [line for line in proc.stderr.splitlines() if "ffe audit verify" in line]
    assert len(said) == 1, proc.stderr
    assert str(TRAIL) in said[0] and f"seq {seq}" in said[0], said[0]
    started = [r.body for r in hook.delivered if r.body.get("kind") == "STARTED"]
    assert len(started) == 1 and started[0]["severity"] == "page", [r.body for r in hook.delivered]
    text = started[0]["text"]
    assert str(TRAIL) in text and f"seq {seq}" in text and "ffe audit verify" in text, text
    (run,) = [r for r in audit_lines(cwd / TRAIL) if r["event"] == "run" and r["phase"] == "start"][-1:]
    assert run["detail"]["trail_damaged"]["seq"] == seq and run["detail"]["trail_damaged"]["file"].endswith(
        str(TRAIL))
    # The trail is left as found: the damage is still there for `ffe audit verify` to name.
    verify = run_ffe(cwd, "audit", "verify")
    assert verify.returncode == 1 and f"first bad seq {seq}" in verify.stdout + verify.stderr


async def test_a_damaged_first_record_of_the_current_file_after_a_rotation_is_found_at_start(account, tmp_path):
    """The current file is checked on its own, chained on from the last rotated file's last record."""
    cwd = copy_of(account, tmp_path / "a")
    trail = cwd / TRAIL
    lines = trail.read_bytes().splitlines(keepends=True)
    (cwd / "logs" / "audit-000000000001.jsonl").write_bytes(b"".join(lines[:100]))
    seq = json.loads(lines[100])["seq"]
    lines[100] = lines[100].replace(b'"event":"', b'"event":"x', 1)
    trail.write_bytes(b"".join(lines[100:]))
    proc, hook = await run_ffe_paging(cwd, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "ffe audit verify" in line]
    assert len(said) == 1 and f"seq {seq}" in said[0] and str(TRAIL) in said[0], proc.stderr
    started = [r.body for r in hook.delivered if r.body.get("kind") == "STARTED"]
    assert started and started[0]["severity"] == "page" and f"seq {seq}" in started[0]["text"], started


async def test_a_start_on_a_whole_trail_says_nothing_of_damage(account, tmp_path):
    cwd = copy_of(account, tmp_path / "a")
    proc, hook = await run_ffe_paging(cwd, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr
    assert "ffe audit verify" not in proc.stderr
    started = [r.body for r in hook.delivered if r.body.get("kind") == "STARTED"]
    assert started and started[0]["severity"] != "page" and "DAMAGED" not in started[0]["text"], started


# ---------------------------------------------------------------------------------------------------- backups
@pytest.mark.parametrize("how", ["a byte in a record", "a byte in its seq", "a line deleted"])
def test_a_backup_takes_a_damaged_record_from_the_database_and_says_so(account, tmp_path, how):
    cwd = copy_of(account, tmp_path / "a")
    seq, before = damage(cwd, how)
    proc = take(cwd, tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    # On stderr: the shipped cron job (deploy/cron/ffe-backup) sends stdout to /dev/null and mails the rest.
    (warning,) = proc.stderr.strip().splitlines()
    assert warning.startswith("warning: the audit trail is damaged") and "warning" not in proc.stdout, proc.stdout
    assert "ffe doctor" in warning and f"seq {seq}" in warning and str(TRAIL) in warning, warning
    (path,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    assert unpacked_trail(path, tmp_path / "x") == before  # the records as written, the database's copy in place
    assert ffe_in_process(cwd, "backup", "verify", str(path)).returncode == 0

    proc = take(cwd, tmp_path / "c", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["manifest"]
    assert "warning: the audit trail is damaged" in proc.stderr
    assert manifest["trail_records_from_database"] == 1
    (where,) = manifest["trail_damaged"]
    assert (where["first"], where["last"]) == (seq, seq) and where["file"] == str((cwd / TRAIL).absolute())
    (path,) = (tmp_path / "c").glob("ffe-backup-*.tar.zst")
    restored = run_ffe(cwd, "restore", str(path), "--data-dir", "r/data", "--log-dir", "r/logs")
    assert restored.returncode == 0, restored.stderr


def test_a_backup_of_a_whole_trail_takes_nothing_from_the_database(account, tmp_path):
    proc = take(account, tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["manifest"]
    assert manifest["trail_records_from_database"] == 0 and manifest["trail_damaged"] == []


def test_a_damaged_record_the_database_holds_no_copy_of_fails_the_backup(account, tmp_path):
    cwd = copy_of(account, tmp_path / "a")
    seq = db_seq_removed(cwd)
    damage_seq(cwd, seq)
    proc = take(cwd, tmp_path / "b")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert str(TRAIL) in line and f"seq {seq}" in line and "no copy" in line, line
    assert not list((tmp_path / "b").iterdir())  # nothing under a backup's name, nothing staged left


def test_a_record_the_database_holds_no_copy_of_is_backed_up_from_the_trail(account, tmp_path):
    """The same record whole: the trail's line is taken, and the backup verifies."""
    cwd = copy_of(account, tmp_path / "a")
    db_seq_removed(cwd)
    proc = take(cwd, tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["trail_records_from_database"] == 0
    (path,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    assert unpacked_trail(path, tmp_path / "x") == (cwd / TRAIL).read_bytes()


def engine_on(cwd: Path, spawn_ffe):
    """A headless engine on the records in cwd, paced, answering."""
    engine = spawn_ffe(cwd, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"), name="engine")
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    return engine


def test_a_running_engine_backs_up_a_damaged_record_from_the_database_and_says_so(account, tmp_path, spawn_ffe):
    cwd = copy_of(account, tmp_path / "a")
    seq, before = damage(cwd)
    engine = engine_on(cwd, spawn_ffe)
    proc = take(cwd, tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["manifest"]
    assert manifest["source"].startswith("engine ")
    assert manifest["trail_records_from_database"] == 1
    assert [(w["first"], w["last"]) for w in manifest["trail_damaged"]] == [(seq, seq)]
    (path,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    assert unpacked_trail(path, tmp_path / "x").startswith(before)
    assert ffe_in_process(cwd, "backup", "verify", str(path)).returncode == 0

    proc = take(cwd, tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    assert "ffe doctor" in proc.stderr and f"seq {seq}" in proc.stderr, proc.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr


def test_a_running_engine_refuses_a_backup_of_a_damaged_record_the_database_holds_no_copy_of(account, tmp_path,
                                                                                             spawn_ffe):
    cwd = copy_of(account, tmp_path / "a")
    seq = db_seq_removed(cwd)
    damage_seq(cwd, seq)
    engine = engine_on(cwd, spawn_ffe)
    proc = take(cwd, tmp_path / "b")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert str(TRAIL) in line and f"seq {seq}" in line and "no copy" in line, line
    assert not list((tmp_path / "b").iterdir())
    assert engine.alive()
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr


def test_a_backup_over_a_repeated_line_says_the_trail_is_damaged_there(account, tmp_path):
    """A line repeated (the start pages it, `ffe audit verify` refuses it): the backup leaves the repeat out, so its
    trail verifies, and tells the operator where the trail it read is damaged, as for any other damage."""
    cwd = copy_of(account, tmp_path / "a")
    seq, before = damage(cwd, "a line repeated")
    proc = take(cwd, tmp_path / "b", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["manifest"]
    (where,) = manifest["trail_damaged"]
    assert (where["first"], where["last"]) == (seq, seq) and where["file"] == str((cwd / TRAIL).absolute())
    (path,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    assert unpacked_trail(path, tmp_path / "x") == before
    proc = take(cwd, tmp_path / "c")
    assert proc.returncode == 0 and f"seq {seq}" in proc.stderr and "ffe doctor" in proc.stderr, proc.stderr


def test_a_start_on_another_accounts_longer_trail_is_refused_and_leaves_it_as_found(account, tmp_path):
    """The trail of another account, longer than this one's records, put in place of this account's: the start is
    refused (its records are not this database's), and the refusal says the trail was left as it is. It must be:
    not cut at this database's last record with the rest set aside as never committed, and the disk reserve (kept
    for a full disk's HALTED) not emptied, since nothing failed to be written."""
    other = tmp_path / "other"
    other.mkdir()
    proc = run_ffe(other, "run", "--headless", "--max-bars", "400", timeout=120)
    assert proc.returncode == 0, proc.stderr
    cwd = copy_of(account, tmp_path / "a")
    foreign = (other / TRAIL).read_bytes()
    assert len(foreign.splitlines()) > len((cwd / TRAIL).read_bytes().splitlines())
    (cwd / TRAIL).write_bytes(foreign)
    reserve = cwd / "data" / "ffe.reserve"
    kept = reserve.stat().st_size
    assert kept > 0
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 1, proc.stderr
    assert "left as it is" in proc.stderr, proc.stderr
    assert (cwd / TRAIL).read_bytes() == foreign, "the refused start changed the trail"
    assert not list((cwd / "logs").glob("audit.jsonl.uncommitted-after-*")), "records set aside by a refused start"
    assert reserve.stat().st_size == kept, "the disk reserve emptied for records that disagree"


@pytest.mark.parametrize("how", ["removed", "replaced", "emptied"])
def test_an_audit_trail_removed_under_a_running_engine_stops_it_halted_and_is_rebuilt(tmp_path, spawn_ffe, how):
    """`rm logs/audit.jsonl` (or another file put there) while the engine runs: it went on appending to the removed
    file, `ffe audit verify` found no trail, and nobody was told. The engine stops within seconds, HALTED (exit 1,
    one line saying so, paged as a record it cannot write); the file put there is left as it is; once it is moved
    away, the next start rebuilds the trail from the database, comes up HALTED, and the trail verifies."""
    engine = spawn_ffe(tmp_path, "run", "--headless", env=ffe_env(FFE_MARKET__SPEED="20"))
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    trail = tmp_path / "logs" / "audit.jsonl"
    wait_until(lambda: len(audit_lines(trail)) > 20, timeout=60, what="records in the trail")
    if how == "emptied":
        os.truncate(trail, 0)  # `: > logs/audit.jsonl`: the same file, its records gone
    else:
        trail.unlink()
    if how == "replaced":
        trail.write_text("someone else's\n")
    assert engine.wait(30) == 1, engine.stderr[-3000:]
    said = {"removed": "removed", "replaced": "replaced by another file", "emptied": "cut short"}[how]
    assert f"the audit trail was {said} while the engine ran" in engine.stderr, engine.stderr[-3000:]
    if how == "replaced":
        assert trail.read_text() == "someone else's\n"
        trail.rename(trail.with_name("someone-else.txt"))
    if how == "emptied":  # the records appended after it lack those before: the start says so, and to move it away
        refused = run_ffe(tmp_path, "run", "--headless", "--max-bars", "2")
        assert refused.returncode == 1 and "move this file away and start again" in refused.stderr, refused.stderr
        trail.rename(trail.with_name("cut-short.jsonl"))
    again = run_ffe(tmp_path, "run", "--headless", "--max-bars", "2")
    assert again.returncode == 0 and "state=HALTED" in again.stderr, again.stderr[-3000:]
    verify = run_ffe(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
