"""`ffe backup`, `ffe backup verify` and `ffe restore` as an operator runs them: real subprocesses on the data
directory of a real paper run, real archives, damaged on purpose where a check must find something."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sqlite3
import tempfile
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import zstandard

from conftest import (BTC_CSV, audit_lines, db_rows, db_value, ffe_cmd, ffe_env, ffe_in_process, run_ffe,  # noqa: F401
                      sample_head, spawn_ffe, wait_until)
from ffe_engine import backup as bk
from ffe_engine import restore as restore_mod
from ffe_engine.chain import chained, line_hash
from ffe_engine.store import SCHEMA_VERSION

SECRET = "backup-secret-Qz81xP"


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> Path:
    """A directory with config.toml, and the data and logs of a paper run that traded."""
    cwd = tmp_path_factory.mktemp("account")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "200", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return cwd


def env(**extra: str) -> dict[str, str]:
    return ffe_env(FFE_EXCHANGE__SECRET=SECRET, **extra)


@pytest.fixture(scope="module")
def archive(account, tmp_path_factory) -> Path:
    """One backup of the account, taken by `ffe backup` (tests that damage it work on copies)."""
    return take(account, tmp_path_factory.mktemp("backups"))


def take(cwd: Path, to: Path) -> Path:
    proc = run_ffe(cwd, "backup", "--to", str(to), env=env())
    assert proc.returncode == 0, proc.stderr
    (path,) = to.glob("ffe-backup-*.tar.zst")
    return path


def unpack(path: Path, into: Path) -> dict:
    into.mkdir()
    return bk.unpack(path, into)


def repack(work: Path, out: Path, *, update_manifest: bool = True) -> Path:
    """The files in `work` as a backup again; the manifest's checksums follow them unless told not to."""
    manifest = json.loads((work / bk.MANIFEST_NAME).read_text())
    if update_manifest:
        for name in (bk.DB_NAME, bk.TRAIL_NAME, bk.CONFIG_NAME):
            data = (work / name).read_bytes()
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (work / bk.MANIFEST_NAME).write_text(json.dumps(manifest))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in bk.MEMBERS:
            tar.add(work / name, arcname=name)
    out.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return out


def verify(cwd: Path, path: Path, ffe=run_ffe):
    return ffe(cwd, "backup", "verify", str(path))


def test_a_backup_of_a_stopped_directory_holds_everything_and_verifies(account, tmp_path):
    path = take(account, tmp_path / "b")
    assert path.stat().st_mode & 0o077 == 0  # the account's records are its user's alone
    manifest = unpack(path, tmp_path / "x")
    db = sqlite3.connect(tmp_path / "x" / bk.DB_NAME)
    orders, fills, last = (db.execute(sql).fetchone()[0] for sql in (
        "SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM fills", "SELECT MAX(seq) FROM events"))
    db.close()
    assert orders > 0 and fills > 0
    assert manifest["rows"]["orders"] == orders and manifest["rows"]["fills"] == fills
    assert manifest["seq"] == {"first": 1, "last": last} and manifest["source"] == "directory"
    assert manifest["schema_version"] >= 1 and manifest["ffe_version"]
    trail = (tmp_path / "x" / bk.TRAIL_NAME).read_bytes().splitlines()
    assert [json.loads(x)["seq"] for x in trail] == list(range(1, last + 1))
    config = (tmp_path / "x" / bk.CONFIG_NAME).read_text()
    assert "[risk]" in config and SECRET not in config and SECRET.encode() not in path.read_bytes()

    proc = verify(account, path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ") and f"{orders} orders and {fills} fills agree" in proc.stdout
    # the time it was taken in UTC, written as ffe writes times everywhere (…Z, not +00:00)
    assert re.search(r"\(taken \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z by ffe ", proc.stdout), proc.stdout


@pytest.mark.parametrize("damage", ["edited line", "deleted line", "reordered lines", "order without record",
                                    "checksum", "newer schema"])
def test_verify_names_what_is_wrong(account, archive, tmp_path, damage):
    path = archive
    work = tmp_path / "x"
    unpack(path, work)
    trail = work / bk.TRAIL_NAME
    lines = trail.read_bytes().splitlines(keepends=True)
    if damage == "edited line":
        lines[5] = lines[5].replace(b'"seq":6', b'"seq":6,"x":1')
        expected = "audit.jsonl: seq 6: audit.jsonl:6: seq 6 was changed"
    elif damage == "deleted line":
        del lines[5]
        expected = "audit.jsonl:6: seq 7 follows seq 5"
    elif damage == "reordered lines":
        lines[5], lines[6] = lines[6], lines[5]
        expected = "audit.jsonl:6: seq 7 follows seq 5"
    elif damage == "order without record":
        cid = next(json.loads(x)["client_order_id"] for x in lines if b'"event":"order"' in x)
        db = sqlite3.connect(work / bk.DB_NAME)
        with db:
            db.execute("UPDATE orders SET client_order_id = 'ffe-nowhere' WHERE client_order_id = ?", (cid,))
            db.execute("UPDATE fills SET client_order_id = 'ffe-nowhere' WHERE client_order_id = ?", (cid,))
        db.close()
        expected = "order ffe-nowhere (filled) has no record in the audit trail"
    elif damage == "checksum":
        lines[-1] = lines[-1].replace(b'"seq"', b'"seq" ')
        expected = "audit.jsonl: checksum differs from the manifest's"
    else:  # a backup from a newer release: this one could not read its database
        manifest = json.loads((work / bk.MANIFEST_NAME).read_text())
        manifest["schema_version"] = SCHEMA_VERSION + 1
        (work / bk.MANIFEST_NAME).write_text(json.dumps(manifest))
        expected = f"database schema {SCHEMA_VERSION + 1}, newer than this ffe's ({SCHEMA_VERSION})"
    trail.write_bytes(b"".join(lines))
    bad = repack(work, tmp_path / "bad.tar.zst", update_manifest=damage != "checksum")

    proc = verify(account, bad, run_ffe if damage == "edited line" else ffe_in_process)  # the first: a process
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr

    # a backup that fails verify is never restored
    target = tmp_path / "restored"
    proc = (run_ffe if damage == "edited line" else ffe_in_process)(  # the first: a process
        account, "restore", str(bad), "--data-dir", str(target / "data"), "--log-dir", str(target / "logs"))
    assert proc.returncode == 1 and "fails verify, nothing restored" in proc.stderr, proc.stderr
    assert not (target / "data" / "ffe.db").exists() and not (target / "logs").exists()


# A manifest field of the wrong type or missing: one line naming it, never a traceback, never restored (a restore
# that passed one would store it in the restore marker, and the next start would stop on it in a traceback).
MANIFEST_DAMAGE = {
    "seq_not_an_object": (lambda m: m.update(seq="x"), "seq 'x' is not a JSON object"),
    "created_ms_not_a_number": (lambda m: m.update(created_ms="x"), "created_ms 'x' is not an integer"),
    "created_ms_true": (lambda m: m.update(created_ms=True), "created_ms True is not an integer"),
    "created_ms_missing": (lambda m: m.pop("created_ms"), "created_ms is missing"),
    "schema_version_text": (lambda m: m.update(schema_version=str(m["schema_version"])),
                            "schema_version '"),
    "seq_last_text": (lambda m: m["seq"].update(last=str(m["seq"]["last"])), "seq.last '"),
    "seq_last_missing": (lambda m: m["seq"].pop("last"), "seq.last is missing"),
    "files_a_list": (lambda m: m.update(files=[]), "files [] is not a JSON object"),
    "rows_count_text": (lambda m: m["rows"].update(orders="many"), "rows.orders 'many' is not an integer"),
    # what the manifest says of the files must be what the archive holds
    "files_lists_one_not_held": (lambda m: m["files"].update({"audit-000000000001.jsonl": {"sha256": "00" * 32,
                                                                                            "bytes": 100}}),
                                 "files lists audit-000000000001.jsonl, which no backup holds"),
    "seq_first_not_the_trail_s": (lambda m: m["seq"].update(first=2), "seq.first is 2, the audit trail's first is 1"),
}


def assert_not_restored(ffe, account, bad, target, expected: str) -> None:
    """A restore of the backup `bad` into `target` is refused in one line that says why (`expected`), nothing put
    in place."""
    proc = ffe(account, "restore", str(bad), "--data-dir", str(target / "data"), "--log-dir", str(target / "logs"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "fails verify, nothing restored" in line and expected in line, line
    assert not (target / "data" / "ffe.db").exists()


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE)
def test_a_manifest_field_of_the_wrong_type_fails_verify_in_one_line_naming_it(account, archive, tmp_path, damage):
    change, expected = MANIFEST_DAMAGE[damage]
    work = tmp_path / "x"
    unpack(archive, work)
    manifest = json.loads((work / bk.MANIFEST_NAME).read_text())
    change(manifest)
    (work / bk.MANIFEST_NAME).write_text(json.dumps(manifest))
    bad = repack(work, tmp_path / "bad.tar.zst", update_manifest=False)
    ffe = run_ffe if damage == next(iter(MANIFEST_DAMAGE)) else ffe_in_process  # the first: a process

    proc = verify(account, bad, ffe)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert f"{bk.MANIFEST_NAME}: {expected}" in line, line

    assert_not_restored(ffe, account, bad, tmp_path / "restored", expected)


# Rows that contradict their own audit records, as `ffe doctor` finds them: verify checks the backup's records as
# doctor does, so such a backup fails it, naming the row, and is never restored.
def halve_a_fill_s_price(db: sqlite3.Connection) -> str:
    (fid, cid) = db.execute("SELECT id, client_order_id FROM fills ORDER BY id LIMIT 1").fetchone()
    db.execute("UPDATE fills SET price = price / 2 WHERE id = ?", (fid,))
    return f"{bk.DB_NAME}: table orders, order {cid}: filled "  # its order's average: what the start refuses too


def change_a_closed_trade_s_pnl(db: sqlite3.Connection) -> str:
    (tid,) = db.execute("SELECT MIN(id) FROM trades").fetchone()
    db.execute("UPDATE trades SET pnl = pnl + 500 WHERE id = ?", (tid,))
    return f"{bk.DB_NAME}: closed trade {tid}: pnl "


def a_filled_order(db: sqlite3.Connection) -> str:
    return db.execute("SELECT client_order_id FROM orders WHERE status = 'filled' ORDER BY created_ts "
                      "LIMIT 1").fetchone()[0]


def double_an_order_s_average(db: sqlite3.Connection) -> str:
    cid = a_filled_order(db)
    db.execute("UPDATE orders SET average = average * 2 WHERE client_order_id = ?", (cid,))
    return f"{bk.DB_NAME}: table orders, order {cid}: filled "


def triple_an_order_s_quantity(db: sqlite3.Connection) -> str:
    cid = a_filled_order(db)
    db.execute("UPDATE orders SET quantity = quantity * 3 WHERE client_order_id = ?", (cid,))
    return f"{bk.DB_NAME}: order {cid}: quantity "


ROW_DAMAGES = [halve_a_fill_s_price, change_a_closed_trade_s_pnl, double_an_order_s_average,
               triple_an_order_s_quantity]


@pytest.mark.parametrize("damage", ROW_DAMAGES, ids=lambda f: f.__name__)
def test_rows_that_contradict_their_audit_records_fail_verify_and_are_not_restored(account, archive, tmp_path,
                                                                                   damage):
    work = tmp_path / "x"
    unpack(archive, work)
    db = sqlite3.connect(work / bk.DB_NAME, isolation_level=None)
    try:
        expected = damage(db)
    finally:
        db.close()
    bad = repack(work, tmp_path / "bad.tar.zst")
    ffe = run_ffe if damage is ROW_DAMAGES[0] else ffe_in_process  # the first: a process

    proc = verify(account, bad, ffe)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "1 problem(s): " + expected in line, line

    assert_not_restored(ffe, account, bad, tmp_path / "restored", expected)


@pytest.mark.parametrize("damage", ["cut short", "bit flipped"])
def test_a_damaged_backup_file_fails_verify_and_is_not_restored(account, archive, tmp_path, damage):
    """A backup file damaged on its way (a copy cut short, a bad disk) is a backup that fails its checks: exit 1,
    as for any other damage to records; exit 2 is for a file that is no backup at all."""
    data = bytearray(archive.read_bytes())
    if damage == "cut short":
        del data[len(data) * 2 // 3:]
    else:
        data[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    ffe = run_ffe if damage == "cut short" else ffe_in_process  # the first: a process
    proc = verify(account, bad, ffe)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert str(bad) in line and "Traceback" not in proc.stderr, line
    target = tmp_path / "t"
    proc = ffe(account, "restore", str(bad), "--data-dir", str(target / "data"), "--log-dir", str(target / "logs"))
    assert proc.returncode == 1 and "nothing restored" in proc.stderr, proc.stderr
    assert not (target / "data" / "ffe.db").exists()


@pytest.mark.parametrize("keep", [1, 2, 3, 4, 100, 600, 1000, 50_000])
def test_a_backup_cut_short_anywhere_is_damaged_not_bad_input(account, archive, tmp_path, keep):
    """A copy that stopped part way is a backup that fails its checks (exit 1), however early it stopped: within
    its first four bytes too, which are the start of a Zstandard file's."""
    bad = tmp_path / "cut.tar.zst"
    bad.write_bytes(archive.read_bytes()[:keep])
    proc = verify(account, bad, run_ffe if keep in (2, 100) else ffe_in_process)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"ffe: error: {bad}: damaged or cut short (it ends part way through)"], \
        proc.stderr
    if keep == 2:  # restore checks it alike
        target = tmp_path / "t"
        proc = run_ffe(account, "restore", str(bad), "--data-dir", str(target / "data"), "--log-dir",
                       str(target / "logs"))
        assert proc.returncode == 1 and "nothing restored" in proc.stderr, proc.stderr


def test_a_whole_zstandard_file_that_holds_no_backup_is_bad_input(account, tmp_path):
    path = tmp_path / "notes.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"meeting notes, not a backup\n"))
    proc = verify(account, path, ffe_in_process)
    assert proc.returncode == 2, proc.stderr
    assert "not an ffe backup" in proc.stderr and str(path) in proc.stderr, proc.stderr


def test_backup_verify_takes_the_common_options(account, archive, tmp_path):
    config = tmp_path / "other.toml"
    config.write_text("[risk]\nmax_open_positions = 3\n")
    dotenv = tmp_path / "other.env"
    dotenv.write_text("FFE_RISK__MAX_DAILY_TRADES=7\n")
    for ffe, where in ((run_ffe, ("backup", "verify", str(archive))),
                       (ffe_in_process, ("backup", "--log-dir", str(tmp_path / "l"), "verify", str(archive)))):
        proc = ffe(account, *where, "--config", str(config), "--env-file", str(dotenv),
                       "--data-dir", str(tmp_path / "d"), *(("--log-dir", str(tmp_path / "l")) if len(where) == 3
                                                           else ()))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"ok: {archive}: "), proc.stdout


@pytest.mark.parametrize("option", [("--to", "elsewhere"), ("--json",)], ids=["to", "json"])
def test_backup_verify_refuses_the_backup_s_own_options_rather_than_ignore_them(account, archive, tmp_path, option):
    proc = ffe_in_process(account, "backup", *option, "verify", str(archive))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line, = proc.stderr.splitlines()
    assert f"{option[0]} is `ffe backup`'s own option, not its verify's" in line, line
    assert line.endswith("(see `ffe backup verify --help`)"), line
    assert proc.stdout == "" and not (account / "elsewhere").exists()


@pytest.mark.parametrize("content", [b"", b"not a backup at all", None])
def test_a_file_that_is_not_a_backup_is_bad_input(account, tmp_path, content):
    path = tmp_path / "x.tar.zst"
    if content is not None:
        path.write_bytes(content)
    proc = verify(account, path, run_ffe if content == b"" else ffe_in_process)  # the first: a process
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert str(path) in line and "Traceback" not in proc.stderr


@pytest.mark.parametrize("engine", ["stopped", "running"])
def test_a_backup_of_damaged_records_is_refused_and_prunes_none(account, tmp_path, spawn_ffe, engine):
    """A fill's fee set to -1 by hand: the doctor and a start refuse the records, and so would the backup's own
    verify. The backup is refused before anything is written, in one line naming the database and the damage, and
    retention prunes none of the good backups (with keep_last 1 it would delete the one good backup there)."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    if engine == "running":
        proc = spawn_ffe(cwd, "run", "--headless", env=env(FFE_MARKET__SPEED="20"), name="engine")
        wait_until(lambda: "control socket ready" in proc.stderr, timeout=60, what="the engine answering")
    good = take(cwd, tmp_path / "b")
    with sqlite3.connect(cwd / "data" / "ffe.db", timeout=10) as conn:
        conn.execute("UPDATE fills SET fee = -1 WHERE id = (SELECT MIN(id) FROM fills)")
    conn.close()

    backup = run_ffe(cwd, "backup", "--to", str(tmp_path / "b"),
                     env=env(FFE_BACKUP__KEEP_LAST="1", FFE_BACKUP__KEEP_DAYS="0"))
    assert backup.returncode == 1, (backup.stdout, backup.stderr)
    (line,) = backup.stderr.splitlines()
    assert "data/ffe.db" in line and "fee" in line and "no backup was written and none pruned" in line, line
    assert "Traceback" not in backup.stderr
    assert sorted((tmp_path / "b").iterdir()) == [good]
    if engine == "running":
        assert proc.alive()
        proc.send(15)
        assert proc.wait(60) == 0, proc.stderr


DISAGREEING = {  # rows its verify judges against their audit records (doctor.check_against_events), as the doctor does
    "trade_pnl": ("UPDATE trades SET pnl = pnl + 1 WHERE id = (SELECT MIN(id) FROM trades)", "pnl"),
    "trade_deleted": ("DELETE FROM trades WHERE id = (SELECT MIN(id) FROM trades)", "closed trade"),
    "status_back": ("UPDATE orders SET status = 'open' WHERE client_order_id = (SELECT MIN(client_order_id) FROM "
                    "orders WHERE status = 'filled')", "order"),
}


@pytest.mark.parametrize("damage", DISAGREEING)
def test_a_backup_of_rows_that_disagree_with_their_audit_records_is_refused_and_prunes_none(account, tmp_path,
                                                                                           damage):
    """A closed trade's P&L edited, a trade deleted, an order's status put back: rows the doctor and the backup's own
    verify refuse against their audit records. The backup runs its verify's checks on its copy before anything is
    written: refused in one line, and the good backup is kept."""
    statement, word = DISAGREEING[damage]
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    good = take(cwd, tmp_path / "b")
    with sqlite3.connect(cwd / "data" / "ffe.db", timeout=10) as conn:
        conn.execute(statement)
    conn.close()
    backup = run_ffe(cwd, "backup", "--to", str(tmp_path / "b"),
                     env=env(FFE_BACKUP__KEEP_LAST="1", FFE_BACKUP__KEEP_DAYS="0"))
    assert backup.returncode == 1, (backup.stdout, backup.stderr)
    (line,) = backup.stderr.splitlines()
    assert "data/ffe.db" in line and word in line and "no backup was written and none pruned" in line, line
    assert sorted((tmp_path / "b").iterdir()) == [good]


def test_a_trail_in_rotated_files_is_backed_up_whole(account, tmp_path):
    """A trail split into older files (named after their first seq) and the current one is read across them."""
    cwd = tmp_path / "rotated"
    shutil.copytree(account, cwd)
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().splitlines(keepends=True)
    (cwd / "logs" / "audit-000000000001.jsonl").write_bytes(b"".join(lines[:10]))
    (cwd / "logs" / "audit-000000000011.jsonl").write_bytes(b"".join(lines[10:25]))
    trail.write_bytes(b"".join(lines[25:]))
    path = take(cwd, tmp_path / "b")
    unpack(path, tmp_path / "x")
    assert (tmp_path / "x" / bk.TRAIL_NAME).read_bytes() == b"".join(lines)
    assert verify(cwd, path, ffe_in_process).returncode == 0


def test_doctor_names_a_rotated_file_of_the_trail_that_is_missing(account, tmp_path):
    """A rotated file moved away: doctor names it (rotated files are named after their first seq), not the current
    file as if its lines were missing."""
    cwd = tmp_path / "rotated"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().splitlines(keepends=True)
    (cwd / "logs" / "audit-000000000001.jsonl").write_bytes(b"".join(lines[:10]))
    trail.write_bytes(b"".join(lines[25:]))  # audit-000000000011.jsonl, seq 11 to 25, gone
    proc = run_ffe(cwd, "doctor")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "seq 11 is in the database but not in the audit trail" in line, line
    assert "logs/audit-000000000011.jsonl is missing" in line, line


def test_a_backup_of_records_a_kill_left_verifies_as_doctor_finds_them(account, tmp_path):
    # What a kill -9 may leave, which the next start takes as it is (docs/storage.md): a fill line written to the
    # trail whose transaction never committed (the restarted engine's records follow it), and an order journaled
    # `new` whose event the kill lost (the next start settles it). Doctor finds the records whole; so must verify,
    # or every later backup of the account could never be restored.
    cwd = tmp_path / "a"
    shutil.copytree(account, cwd)
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().splitlines()
    fill = json.loads(next(x for x in reversed(lines) if b'"event":"fill"' in x))
    fill.pop("prev")
    fill["seq"] = json.loads(lines[-1])["seq"] + 1
    orphan = chained(json.dumps(fill, separators=(",", ":")).encode(), line_hash(lines[-1]))
    with trail.open("ab") as f:
        f.write(orphan + b"\n")
    again = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert again.returncode == 0, again.stderr
    db = sqlite3.connect(cwd / "data" / "ffe.db")
    with db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(orders)")]
        values = ["'ffe-journaled-before-a-kill'" if c == "client_order_id" else "'new'" if c == "status"
                  else "0" if c == "filled" else c for c in columns]
        db.execute(f"INSERT INTO orders ({', '.join(columns)}) SELECT {', '.join(values)} FROM orders LIMIT 1")
    db.close()
    doctor = ffe_in_process(cwd, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    proc = verify(cwd, take(cwd, tmp_path / "b"), ffe_in_process)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_backup_of_an_order_whose_final_event_a_kill_lost_verifies_and_restores(account, tmp_path):
    # The journal stores an order's end (cancelled here) and the kill comes before its `order` event is written:
    # the trail's last word on it is `new`. Doctor takes the journal being ahead of the trail as what a kill leaves;
    # backup verify must judge it alike, or no backup of the account could ever be restored again.
    cwd = tmp_path / "a"
    shutil.copytree(account, cwd)
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().splitlines()
    last = lines[-1]
    placed = json.loads(next(x for x in reversed(lines) if b'"event":"order"' in x))
    placed.pop("prev")
    like = placed["client_order_id"]  # the journal entry is made from the same order's, as its event is
    cid = "ffe-ended-before-its-event"
    placed.update(seq=json.loads(last)["seq"] + 1, client_order_id=cid, status="new", filled=0.0)
    line = chained(json.dumps(placed, separators=(",", ":")).encode(), line_hash(last))
    with trail.open("ab") as f:
        f.write(line + b"\n")
    db = sqlite3.connect(cwd / "data" / "ffe.db")
    with db:
        ts = db.execute("SELECT ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
        db.execute("INSERT INTO events (seq, ts, event, data) VALUES (?, ?, 'order', ?)", (placed["seq"], ts, line))
        db.execute("UPDATE kv SET value = ? WHERE key = 'audit_head'",
                   (json.dumps({"seq": placed["seq"], "hash": line_hash(line)}),))
        columns = [r[1] for r in db.execute("PRAGMA table_info(orders)")]
        values = [f"'{cid}'" if c == "client_order_id" else "'canceled'" if c == "status" else "0" if c == "filled"
                  else "NULL" if c == "average" else "0" if c == "fee" else c for c in columns]
        db.execute(f"INSERT INTO orders ({', '.join(columns)}) SELECT {', '.join(values)} FROM orders "
                   "WHERE client_order_id = ?", (like,))
    db.close()
    doctor = ffe_in_process(cwd, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    path = take(cwd, tmp_path / "b")
    proc = verify(cwd, path, ffe_in_process)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    restored = run_ffe(cwd, "restore", str(path), "--data-dir", "r/data", "--log-dir", "r/logs")
    assert restored.returncode == 0, restored.stderr


def test_restore_puts_the_records_back_and_never_overwrites_without_force(account, archive, tmp_path):
    path = archive
    target = tmp_path / "t"
    dirs = ("--data-dir", str(target / "data"), "--log-dir", str(target / "logs"))
    proc = run_ffe(account, "restore", str(path), *dirs)
    assert proc.returncode == 0, proc.stderr
    doctor = run_ffe(account, "doctor", *dirs)
    assert doctor.returncode == 0 and doctor.stdout.startswith("ok: "), doctor.stderr
    restored = (target / "data" / "ffe.db").read_bytes()

    proc = run_ffe(account, "restore", str(path), *dirs)
    assert proc.returncode == 1 and "add --force" in proc.stderr and "nothing restored" in proc.stderr
    assert (target / "data" / "ffe.db").read_bytes() == restored

    rotated = target / "logs" / "audit-000000000001.jsonl"  # an older file of the trail being replaced
    rotated.write_text("{}\n")
    proc = run_ffe(account, "restore", str(path), *dirs, "--force")
    assert proc.returncode == 0, proc.stderr
    assert not rotated.exists() and list((target / "logs").glob("audit-000000000001.jsonl.before-restore-*"))
    aside = sorted(p.name for p in (target / "data").glob("ffe.db.before-restore-*"))
    assert len(aside) == 1 and (target / "data" / aside[0]).read_bytes() == restored  # moved, not deleted
    assert list((target / "logs").glob("audit.jsonl.before-restore-*"))


def engine_running(account: Path, cwd: Path, spawn_ffe):
    """A headless engine on the account's configuration in `cwd`, answering; paced, so it trades on bar by bar
    while the test works beside it."""
    cwd.mkdir()
    (cwd / "config.toml").write_text((account / "config.toml").read_text())
    engine = spawn_ffe(cwd, "run", "--headless", env=env(FFE_MARKET__SPEED="20"), name="engine")
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    return cwd, engine


def test_a_running_engine_backs_itself_up_and_refuses_a_restore_over_it(account, archive, tmp_path, spawn_ffe):
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)

    path = take(cwd, tmp_path / "b")
    proc = run_ffe(cwd, "audit", "tail", "--event", "backup", "--json")
    (event,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert event["file"] == str(path) and event["bytes"] == path.stat().st_size
    assert verify(cwd, path, ffe_in_process).returncode == 0

    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 1 and "an ffe engine is running on this data directory" in proc.stderr, proc.stderr
    assert engine.alive()
    assert not list((cwd / "data").glob("*.before-restore-*"))
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr


def test_an_engine_whose_lock_files_were_removed_under_it_is_still_backed_up_by_itself_and_never_restored_over(
        account, archive, tmp_path, spawn_ffe):
    """A cleanup of `*.lock` files removed a running engine's lock files. The engine still holds its database (as a
    second start finds): `ffe backup` asks the engine for its backup rather than copying its records from under it as
    a stopped directory's, and `ffe restore --force` is refused, not moving aside the records the engine writes."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    for lock in (cwd / "data" / "ffe.lock", cwd / "data" / "ffe.sock.lock", cwd / "logs" / "audit.jsonl.lock"):
        lock.unlink(missing_ok=True)

    proc = run_ffe(cwd, "backup", "--to", str(tmp_path / "b"), env=env())
    assert proc.returncode == 0, proc.stderr
    assert "from the running engine" in proc.stdout, proc.stdout
    assert run_ffe(cwd, "audit", "tail", "--event", "backup", "--json").stdout.strip(), "the engine took no backup"

    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == ["ffe: error: data: an ffe engine is running on this data directory; stop it "
                                        "first (nothing restored)"], proc.stderr
    assert not list((cwd / "data").glob("*.before-restore-*")) and not list((cwd / "logs").glob("*.before-restore-*"))
    assert engine.alive()
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr


def test_a_backup_beside_an_engine_that_does_not_answer_says_so_at_once_instead_of_waiting_an_hour(
        account, tmp_path, spawn_ffe):
    """The engine is frozen (SIGSTOP here; a hung event loop alike): `ffe backup` (run hourly by its timer) says in
    one line that the engine does not answer and takes nothing, within the time a `ffe ctl` command waits, instead
    of waiting an hour for the backup it asked for; once the engine answers again, the next backup is taken."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    engine.send(signal.SIGSTOP)
    try:
        proc = run_ffe(cwd, "backup", "--to", str(tmp_path / "b"), env=env(FFE_CONTROL__REQUEST_TIMEOUT_S="2"),
                       timeout=60)
    finally:
        engine.send(signal.SIGCONT)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "no answer from the engine" in line and "no backup taken" in line, line
    assert f"`kill -USR1 {engine.pid}`" in line, line  # the frozen engine named, and how to halt it all the same
    assert not list((tmp_path / "b").glob("ffe-backup-*"))
    take(cwd, tmp_path / "b")
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr


def test_a_running_engine_s_backup_refusal_is_said_as_a_stopped_directory_s_without_its_class_name(
        account, tmp_path, spawn_ffe):
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("mine")
    proc = run_ffe(cwd, "backup", "--to", str(not_a_directory / "backups"), env=env())
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"ffe: error: the engine took no backup: {not_a_directory / 'backups'}: cannot write a "
                           "backup here ("), line
    engine.send(signal.SIGTERM)
    assert engine.wait(60) == 0, engine.stderr


def test_a_backup_asked_in_the_moment_before_a_stop_is_answered_and_recorded_before_the_engine_ends(
        account, tmp_path, spawn_ffe):
    """`ffe backup` from its timer, then a `systemctl stop` while the engine writes the file: the stop waits for the
    command under way, so the caller is told where the backup is and the engine's records hold its `backup` event,
    instead of a file nobody was told of and `ffe backup` failing."""
    cwd = tmp_path / "live"
    shutil.copytree(account, cwd)
    trail = cwd / "logs" / "audit.jsonl"
    lines = trail.read_bytes().splitlines(keepends=True)
    rotated = cwd / "logs" / "audit-000000000001.jsonl"  # the trail in two files, as a rotation leaves it
    rotated.write_bytes(b"".join(lines[:10]))
    trail.write_bytes(b"".join(lines[10:]))
    engine = spawn_ffe(cwd, "run", "--headless", env=env(FFE_MARKET__SPEED="20"), name="engine")
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    dest = tmp_path / "b"
    for attempt in range(20):
        before = set(staged(dest, ".ffe-backup-"))
        archives = set(dest.glob("ffe-backup-*")) if dest.exists() else set()
        backup = spawn_ffe(cwd, "backup", "--to", str(dest), "--json", env=env(), name=f"backup{attempt}-")
        wait_until(lambda: staged(dest, ".ffe-backup-", before) or not backup.alive(), what="the backup staging")
        engine.send(signal.SIGSTOP)  # the engine, its backup with it, held where it is
        if staged(dest, ".ffe-backup-", before) and set(dest.glob("ffe-backup-*")) == archives:
            break  # under way: its staging there, its archive not yet in place
        engine.send(signal.SIGCONT)
        assert backup.wait(60) == 0, backup.stderr
    else:
        pytest.fail("no backup could be held under way in 20 tries")
    engine.send(signal.SIGTERM)  # the stop, asked while the backup is under way
    engine.send(signal.SIGCONT)
    wait_until(lambda: "the stop waits for control commands under way" in engine.stderr, what="the stop waiting")
    assert backup.wait(60) == 0, backup.stderr
    made = json.loads(backup.stdout)
    assert engine.wait(60) == 0, engine.stderr
    assert "Traceback" not in engine.stderr and "callback" not in engine.stderr, engine.stderr
    proc = run_ffe(cwd, "audit", "tail", "--event", "backup", "--json")
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert events[-1]["file"] == made["file"] and Path(made["file"]).exists()
    assert verify(cwd, Path(made["file"]), ffe_in_process).returncode == 0


def test_a_restore_over_a_halted_account_keeps_the_kill_switch(account, archive, tmp_path, spawn_ffe):
    """The backup was taken before the kill switch was pressed: restored as it is, the account would start again
    without it. The restore keeps the HALTED state of the records it moves aside."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    halt = run_ffe(cwd, "ctl", "halt")
    assert halt.returncode == 0, halt.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    db = cwd / "data" / "ffe.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT state FROM engine_state").fetchall() == [("HALTED",)]
    with sqlite3.connect(archive_db(archive, tmp_path / "unpacked")) as conn:
        assert conn.execute("SELECT state FROM engine_state").fetchall() != [("HALTED",)]  # the case in point

    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout + proc.stderr  # the operator is told the kill switch is kept
    reason = kept_by_the_restore(db)
    # The state is stored without its event (the restored trail ends before the halt): doctor notes it until the
    # next start records the event that says it.
    doctor = ffe_in_process(cwd, "doctor")
    assert doctor.returncode == 0 and "HALTED kept across a restore, without its event" in doctor.stdout, doctor.stdout
    started_halted(cwd)
    said = [e for e in audit_lines(cwd / "logs" / "audit.jsonl") if e["event"] == "engine_state"][-1]
    assert (said["state"], said["reason"], said["by"]) == ("HALTED", reason, "restore"), said
    doctor = ffe_in_process(cwd, "doctor")
    assert doctor.returncode == 0 and "without its event" not in doctor.stdout, doctor.stdout
    # Restored again (and again): the reason says once that it was kept across a restore, it does not grow a note
    # per restore in every page and status line.
    for _ in range(2):
        again = run_ffe(cwd, "restore", str(archive), "--force")
        assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as conn:
        ((state, kept, by),) = conn.execute("SELECT state, reason, by FROM engine_state").fetchall()
    assert (state, kept, by) == ("HALTED", reason, "restore"), (state, kept, by)


STATE = "SELECT state FROM engine_state"


def kept_by_the_restore(db: Path) -> str:
    """The kill switch a restore kept: HALTED stored by `restore` with the halt's reason (`ffe ctl halt`). The
    reason."""
    ((state, reason, by),) = db_rows(db, "SELECT state, reason, by FROM engine_state")
    assert state == "HALTED" and "ffe ctl halt" in reason and by == "restore", (state, reason, by)
    return str(reason)


def started_halted(cwd: Path) -> None:
    started = run_ffe(cwd, "run", "--headless", "--max-bars", "5", env=env())
    assert started.returncode == 0, started.stderr
    assert re.search(r"engine started.*state=HALTED", started.stderr), started.stderr[-2000:]


def halted_then_an_older_database_put_back(account: Path, tmp_path: Path, spawn_ffe) -> tuple[Path, Path]:
    """An account in tmp_path/live whose kill switch was pressed (`ffe ctl halt`, stopped in order) after which an
    older copy of its database, taken when its first run stopped, was put back: the halt is only in the audit trail's
    records past the database's last event. Returns the directory and the database."""
    cwd = tmp_path / "live"
    cwd.mkdir()
    (cwd / "config.toml").write_text((account / "config.toml").read_text())
    first = run_ffe(cwd, "run", "--headless", "--max-bars", "20", env=env())
    assert first.returncode == 0, first.stderr
    db = cwd / "data" / "ffe.db"
    older = tmp_path / "older.db"
    shutil.copyfile(db, older)  # stopped in order: the whole database in its file
    engine = spawn_ffe(cwd, "run", "--headless", env=env(FFE_MARKET__SPEED="20"), name="engine")
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    halt = run_ffe(cwd, "ctl", "halt")
    assert halt.returncode == 0, halt.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    shutil.copyfile(older, db)  # the older copy put back
    assert db_value(db, STATE) != "HALTED"  # the case in point
    return cwd, db


def test_a_restore_keeps_a_kill_switch_found_only_in_the_audit_records_past_the_database(account, archive, tmp_path,
                                                                                         spawn_ffe):
    """An older copy of the database put back (the runbook's case for a restore): the kill switch pressed since is in
    the audit trail's records past the database's last event, not in the database. The start would keep that halt
    (states.md); so does the restore the checks send the operator to, which moves those records aside: the restored
    account is HALTED, and the operator is told so."""
    cwd, db = halted_then_an_older_database_put_back(account, tmp_path, spawn_ffe)
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 1 and "restore the newest backup" in doctor.stdout + doctor.stderr, doctor.stdout

    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    kept_by_the_restore(db)
    started_halted(cwd)


def halted_after_its_backup_then_its_database_moved_aside(account: Path, tmp_path: Path, spawn_ffe,
                                                          rearmed: bool = False) -> tuple[Path, Path]:
    """An account backed up by its running engine, halted since (`ffe ctl halt`, HALTED stored, stopped in order;
    `rearmed`: re-armed after it, `ffe ctl resume --yes`), whose database the operator then moved aside by hand, as
    the runbook says for a damaged one: the halt is in the audit trail alone, past the backup's last event. Returns
    the directory and the backup."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    backup = take(cwd, tmp_path / "b")
    halt = run_ffe(cwd, "ctl", "halt")
    assert halt.returncode == 0, halt.stderr
    if rearmed:
        rearm = run_ffe(cwd, "ctl", "resume", "--yes")
        assert rearm.returncode == 0, rearm.stdout + rearm.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    assert db_value(cwd / "data" / "ffe.db", STATE) == ("RUNNING" if rearmed else "HALTED")
    aside = tmp_path / "aside"
    aside.mkdir()
    for p in (cwd / "data").glob("ffe.db*"):
        p.rename(aside / p.name)
    return cwd, backup


def test_a_restore_keeps_a_kill_switch_in_the_audit_records_past_the_backup_when_no_database_is_there(
        account, tmp_path, spawn_ffe):
    """The runbook's "move the damaged database aside, then restore the newest backup": with no database there to
    read, the halt pressed after the backup is in the audit trail the restore moves aside, past the backup's last
    event. The restore keeps it, and says so, as it does when the database is there."""
    cwd, backup = halted_after_its_backup_then_its_database_moved_aside(account, tmp_path, spawn_ffe)
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout, proc.stdout
    db = cwd / "data" / "ffe.db"
    kept_by_the_restore(db)
    started_halted(cwd)


def test_a_restore_with_no_database_there_does_not_bring_back_a_kill_switch_the_operator_re_armed(
        account, tmp_path, spawn_ffe):
    """Halted after the backup, then re-armed: the audit records past the backup end RUNNING. The restore keeps the
    state they end in, as it does when the database is there: no HALTED the operator re-armed over."""
    cwd, backup = halted_after_its_backup_then_its_database_moved_aside(account, tmp_path, spawn_ffe, rearmed=True)
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert db_value(cwd / "data" / "ffe.db", STATE) != "HALTED", proc.stdout


def test_a_restore_after_an_earlier_one_left_an_unreadable_database_aside_goes_through_halted(account, tmp_path):
    """A damaged database restored over (`--force`: it is kept aside, as the runbook says, for a post-mortem), the
    account run again; later its database is moved aside by hand and the newest backup restored. The damaged one
    left aside by the earlier restore cannot be read: the restore is not refused as if a restore had been cut short
    (nor sent to free space where it reads), it goes through, and keeps the account HALTED, whether that database
    was cannot be told, naming it."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    backup = take(cwd, tmp_path / "b")
    db = cwd / "data" / "ffe.db"
    for side in ("-wal", "-shm"):
        db.with_name(db.name + side).unlink(missing_ok=True)
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # damaged
    first = run_ffe(cwd, "restore", str(backup), "--force")
    assert first.returncode == 0, first.stdout + first.stderr
    aside = tmp_path / "by-hand"
    aside.mkdir()
    for p in (cwd / "data").glob("ffe.db"):
        p.rename(aside / p.name)
    second = run_ffe(cwd, "restore", str(backup), "--force")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "could not be read" in second.stdout, second.stdout
    ((state, reason),) = db_rows(db, "SELECT state, reason FROM engine_state")
    assert state == "HALTED" and "ffe.db.before-restore-" in reason, (state, reason)
    assert ".ffe-restore-read-" not in second.stdout + second.stderr + reason  # named as it is, not its copy


def test_a_restore_with_no_database_there_and_audit_records_it_cannot_read_restores_the_account_halted(
        account, tmp_path, spawn_ffe):
    """No database to read, and records beside the trail that cannot be read (a directory here, a bad disk
    elsewhere): whether they hold a kill switch cannot be told, so the restored account is HALTED, as over a
    database that cannot be read."""
    cwd, backup = halted_after_its_backup_then_its_database_moved_aside(account, tmp_path, spawn_ffe)
    (cwd / "logs" / "audit.jsonl.uncommitted-after-1").mkdir()
    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout and "could not be read" in proc.stdout, proc.stdout
    with sqlite3.connect(cwd / "data" / "ffe.db") as conn:
        ((state, reason, by),) = conn.execute("SELECT state, reason, by FROM engine_state").fetchall()
    assert state == "HALTED" and by == "restore" and "could not be read" in reason, (state, reason, by)


@pytest.mark.parametrize("name", ["audit-000000000001.jsonl", "audit.jsonl.uncommitted-after-1"])
def test_a_restore_over_records_with_a_fifo_among_them_moves_it_aside_unread_and_restores_the_account_halted(
        account, tmp_path, spawn_ffe, name):
    """A FIFO among the records a restore replaces (a rotated file of the trail, a set-aside file) is never waited
    on: like records that cannot be read, whether they hold a kill switch cannot be told, so the restored account
    is HALTED, and the FIFO is moved aside with the rest."""
    cwd, backup = halted_after_its_backup_then_its_database_moved_aside(account, tmp_path, spawn_ffe)
    os.mkfifo(cwd / "logs" / name)
    proc = run_ffe(cwd, "restore", str(backup), "--force", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout and "could not be read" in proc.stdout, proc.stdout
    assert not (cwd / "logs" / name).exists()
    assert [p.name for p in (cwd / "logs").iterdir() if p.name.startswith(name + ".before-restore-")]


@pytest.mark.parametrize("name, target", [("audit.jsonl", "audit.jsonl"),
                                          ("audit-000000000001.jsonl", "audit-000000000001.jsonl"),
                                          ("audit.jsonl.uncommitted-after-1", "audit.jsonl.uncommitted-after-1"),
                                          ("audit.jsonl", "/nonexistent/x")],
                         ids=["loop_current", "loop_rotated", "loop_set_aside", "link_to_nowhere_current"])
def test_a_restore_over_records_with_a_bad_link_among_them_moves_the_link_aside_unread(account, archive, tmp_path,
                                                                                      name, target):
    """A link among the records a restore replaces that loops, or leads nowhere, is one of them as a FIFO is: moved
    aside unread (never deleted, never left in place), whichever file of the trail it is, and since what it held
    cannot be read the restored account is HALTED. The account then passes doctor."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    link = cwd / "logs" / name
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    proc = run_ffe(cwd, "restore", str(archive), "--force", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HALTED" in proc.stdout and "could not be read" in proc.stdout, proc.stdout
    (aside,) = [p for p in (cwd / "logs").iterdir() if p.name.startswith(name + ".before-restore-")]
    assert aside.is_symlink() and os.readlink(aside) == target
    if name == "audit.jsonl":
        assert link.is_file() and not link.is_symlink()  # the backup's trail in its place
    else:
        assert not os.path.lexists(link)
    doctor = run_ffe(cwd, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_a_restore_does_not_bring_back_a_kill_switch_the_operator_re_armed_after_its_records_were_set_aside(
        account, tmp_path, spawn_ffe):
    """The halt found in records a start set aside was kept by that start, and the operator, having checked the
    books, re-armed the engine (which records the set-aside file as checked). A later restore of a backup taken
    since, with that file still beside the trail, brings nothing back: no record of it lies past the database."""
    cwd, db = halted_then_an_older_database_put_back(account, tmp_path, spawn_ffe)
    engine = spawn_ffe(cwd, "run", "--headless", env=env(FFE_MARKET__SPEED="20"), name="again")
    wait_until(lambda: "control socket ready" in engine.stderr, timeout=60, what="the engine answering")
    assert list((cwd / "logs").glob("audit.jsonl.uncommitted-after-*")), "the start set nothing aside"
    assert "HALTED" in run_ffe(cwd, "ctl", "status").stdout
    rearm = run_ffe(cwd, "ctl", "resume", "--yes")
    assert rearm.returncode == 0, rearm.stdout + rearm.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    assert db_value(db, STATE) == "RUNNING"
    backup = take(cwd, tmp_path / "b")

    proc = run_ffe(cwd, "restore", str(backup), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert db_value(db, STATE) == "RUNNING"


def archive_db(archive: Path, into: Path) -> Path:
    unpack(archive, into)
    return into / bk.DB_NAME


def test_a_restore_into_the_log_directory_of_a_running_engine_is_refused(account, archive, tmp_path, spawn_ffe):
    """Another --data-dir, but the default --log-dir is the running engine's: its audit trail is not touched."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)

    proc = run_ffe(cwd, "restore", str(archive), "--data-dir", str(cwd / "other"), "--force")
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "logs" in line and f"pid {engine.pid}" in line and "nothing restored" in line, line
    assert not list((cwd / "logs").glob("*.before-restore-*"))
    assert not (cwd / "other").exists()  # nothing touched: not even the data directory made, or a lock in it

    # nor does a second engine on another data directory write into the same trail
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", "--data-dir", str(cwd / "other"))
    assert proc.returncode == 2 and f"pid {engine.pid}" in proc.stderr, proc.stderr
    assert not (cwd / "other").exists()

    assert engine.alive()
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    proc = run_ffe(cwd, "audit", "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def held_backup(cwd: Path, dest: Path, spawn_ffe, name: str):
    """`ffe backup` of cwd into dest held under way: stopped (SIGSTOP) once its staging directory holds the
    database's copy and before its archive is in place, its staging still held (SIGCONT lets it go on). A backup
    that ended before it could be stopped is taken again, its archive removed. Returns the process and its
    staging directory."""
    for attempt in range(20):
        before = set(staged(dest, ".ffe-backup-"))
        archives = set(dest.glob("ffe-backup-*")) if dest.exists() else set()
        proc = spawn_ffe(cwd, "backup", "--to", str(dest), env=env(), name=f"{name}{attempt}-")
        wait_until(lambda: staged(dest, ".ffe-backup-", before) or not proc.alive(), what="the backup staging")
        proc.send(signal.SIGSTOP)
        mine = staged(dest, ".ffe-backup-", before)
        if proc.alive() and mine and set(dest.glob("ffe-backup-*")) == archives:
            return proc, mine
        proc.send(signal.SIGCONT)
        assert proc.wait(60) == 0, proc.stderr
        for made in set(dest.glob("ffe-backup-*")) - archives:
            made.unlink()
    pytest.fail("no backup could be stopped under way in 20 tries")


def open_pipe(pipe: Path, reader) -> int:
    """The writing end of `pipe`, once `reader` (a running ffe) has opened it."""
    def opened() -> int | None:
        assert reader.alive(), reader.stderr
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # nobody reading yet
            return None
        os.set_blocking(fd, True)
        return fd
    return wait_until(opened, what=f"{pipe} read")


def staged(directory: Path, prefix: str, but: set[Path] = frozenset()) -> list[Path]:
    return [p for p in directory.glob(prefix + "*") if p not in but and (p / bk.DB_NAME).exists()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_backup_removes_what_it_staged(account, tmp_path, spawn_ffe, sig):
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd)
    dest = tmp_path / "b"
    proc, _ = held_backup(cwd, dest, spawn_ffe, "backup")
    proc.send(sig)
    proc.send(signal.SIGCONT)
    assert proc.wait(60) == 130, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "backup interrupted" in line and str(dest) in line, line
    assert list(dest.iterdir()) == []


def test_a_backup_removes_what_interrupted_backups_left_but_not_a_backup_under_way(account, tmp_path, spawn_ffe):
    dest = tmp_path / "b"
    for name in ("waiting", "killed"):
        shutil.copytree(account, tmp_path / name)
    waiting, under_way = held_backup(tmp_path / "waiting", dest, spawn_ffe, "waiting")
    killed, left = held_backup(tmp_path / "killed", dest, spawn_ffe, "killed")
    killed.kill()  # SIGKILL: nothing of it can clean up
    partial = dest / "ffe-backup-20260101T000000000Z.tar.zst.partial"  # a file killed while it was written
    partial.write_bytes(b"x" * 4096)

    proc = run_ffe(account, "backup", "--to", str(dest), env=env())
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if "interrupted" in x]
    assert str(left[0]) in line and str(partial) in line, proc.stdout
    assert not left[0].exists() and not partial.exists()
    assert all(p.exists() for p in under_way)

    waiting.send(signal.SIGCONT)  # the backup under way goes on, whole
    assert waiting.wait(60) == 0, waiting.stderr
    made = sorted(dest.iterdir())
    assert len(made) == 2 and all(bk.taken_at(p.name) for p in made), made
    assert all(verify(account, p, ffe_in_process).returncode == 0 for p in made)


def restore_from_pipe(spawn_ffe, account: Path, pipe: Path, target: Path, tmp: Path, data: bytes, name: str):
    """`ffe restore` reading its backup from a pipe fed half the file: it waits there, unpacking."""
    os.mkfifo(pipe)
    proc = spawn_ffe(account, "restore", str(pipe), "--data-dir", str(target / "data"), "--log-dir",
                     str(target / "logs"), env=env(TMPDIR=str(tmp)), name=name)
    fd = open_pipe(pipe, proc)
    os.write(fd, data[:len(data) // 2])
    return proc, fd


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_restore_removes_what_it_staged(account, archive, tmp_path, spawn_ffe, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, fd = restore_from_pipe(spawn_ffe, account, tmp_path / "pipe", tmp_path / "t", tmp, archive.read_bytes(),
                                 "restore")
    wait_until(lambda: staged(tmp, ".ffe-restore-"), what="the restore unpacking")
    proc.send(sig)
    assert proc.wait(60) == 130, proc.stderr
    os.close(fd)
    (line,) = proc.stderr.splitlines()
    assert "restore interrupted" in line and "nothing restored" in line, line
    assert list(tmp.iterdir()) == [] and not (tmp_path / "t" / "data" / "ffe.db").exists()


def test_a_restore_removes_what_interrupted_restores_left_but_not_a_restore_under_way(account, archive, tmp_path,
                                                                                    spawn_ffe):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    data = archive.read_bytes()
    waiting, fd = restore_from_pipe(spawn_ffe, account, tmp_path / "p1", tmp_path / "t1", tmp, data, "waiting")
    under_way = wait_until(lambda: staged(tmp, ".ffe-restore-"), what="a restore unpacking")
    killed, killed_fd = restore_from_pipe(spawn_ffe, account, tmp_path / "p2", tmp_path / "t2", tmp, data, "killed")
    left = wait_until(lambda: staged(tmp, ".ffe-restore-", set(under_way)), what="a second restore unpacking")
    killed.kill()  # SIGKILL: nothing of it can clean up
    os.close(killed_fd)

    proc = run_ffe(account, "restore", str(archive), "--data-dir", str(tmp_path / "t3" / "data"), "--log-dir",
                   str(tmp_path / "t3" / "logs"), env=env(TMPDIR=str(tmp)))
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if "interrupted" in x]
    assert str(left[0]) in line, proc.stdout
    assert not left[0].exists() and all(p.exists() for p in under_way)

    os.write(fd, data[len(data) // 2:])  # the restore under way goes on, whole
    os.close(fd)
    assert waiting.wait(60) == 0, waiting.stderr
    assert (tmp_path / "t1" / "data" / "ffe.db").exists() and list(tmp.iterdir()) == []


def test_retention_keeps_the_newest_and_one_a_day(tmp_path):
    now = time.mktime(time.strptime("2026-03-10 12:00", "%Y-%m-%d %H:%M")) - time.timezone
    made = []
    for hours in range(0, 24 * 10, 6):  # every 6 hours for 10 days
        p = tmp_path / bk.archive_name(now - hours * 3600)
        p.write_bytes(b"x")
        made.append(p)
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    deleted = bk.prune(tmp_path, keep_last=3, keep_days=4, now=now)
    kept = sorted(set(made) - set(deleted))
    assert made[:3] == sorted(kept, reverse=True)[:3]  # the newest three
    days = sorted({time.strftime("%Y-%m-%d", time.gmtime(bk.taken_at(p.name))) for p in kept})
    assert days == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]
    assert len(kept) == 3 + 3  # today's newest is among the three; one for each of the three days before
    assert other.exists() and all(not p.exists() for p in deleted)


def test_backups_named_in_the_future_by_a_clock_set_back_since_never_push_out_the_backup_just_taken(
        account, archive, tmp_path):
    """A clock that was ahead (a machine's clock before NTP corrected it) named two backups a day in the future.
    Ranked by their names they were always the newest two: each later `ffe backup` deleted the backup it had just
    taken, the only one holding the records since, and then failed on the file it had deleted. The backup just
    taken is always kept, and names after now rank after every backup taken up to now."""
    dest = tmp_path / "backups"
    dest.mkdir()
    now = time.time()
    ahead = [dest / bk.archive_name(now + hours * 3600) for hours in (24, 25)]
    for p in ahead:
        shutil.copyfile(archive, p)
    proc = run_ffe(account, "backup", "--to", str(dest), env=env(FFE_BACKUP__KEEP_LAST="2", FFE_BACKUP__KEEP_DAYS="0"))
    assert proc.returncode == 0, proc.stderr
    made = [p for p in dest.iterdir() if p not in ahead]
    assert len(made) == 1 and proc.stdout.startswith(f"{made[0]}: "), proc.stdout
    # Kept with the newer of the two named ahead (keep_last 2); the other is pruned, and the line says so.
    assert sorted(dest.iterdir()) == sorted([made[0], ahead[1]])
    assert proc.stdout.splitlines()[-1] == f"pruned {ahead[0]}"
    # The next backups push the ones named ahead out, newest of now first.
    proc = run_ffe(account, "backup", "--to", str(dest), env=env(FFE_BACKUP__KEEP_LAST="2", FFE_BACKUP__KEEP_DAYS="0"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"pruned {ahead[1]}"
    assert len(list(dest.iterdir())) == 2 and made[0].exists() and not any(p.exists() for p in ahead)


def test_a_database_of_a_newer_schema_is_not_backed_up_by_an_older_release_and_nothing_is_pruned(account, tmp_path):
    """After a rollback to an older release (runbook.md), its hourly `ffe backup` took the newer release's database:
    a backup labelled with a schema that release never writes, that its own `ffe backup verify` refuses, and that
    counted toward retention, pruning a good one at each run. Refused as the start and `ffe doctor` refuse it."""
    from ffe_engine.store import SCHEMA_VERSION

    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd)
    dest = tmp_path / "backups"
    dest.mkdir()
    kept = dest / bk.archive_name(time.time() - 3600)
    kept.write_bytes(b"an earlier backup")
    with sqlite3.connect(cwd / "data" / "ffe.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    proc = run_ffe(cwd, "backup", "--to", str(dest), env=env(FFE_BACKUP__KEEP_LAST="1", FFE_BACKUP__KEEP_DAYS="0"))
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    [line] = proc.stderr.splitlines()
    assert f"database schema version {SCHEMA_VERSION + 1} is newer than this ffe ({SCHEMA_VERSION})" in line, line
    assert list(dest.iterdir()) == [kept]


def test_retention_never_deletes_the_backup_just_made_and_ranks_names_after_now_last(tmp_path):
    now = time.mktime(time.strptime("2026-03-10 12:00", "%Y-%m-%d %H:%M")) - time.timezone
    names = {hours: tmp_path / bk.archive_name(now + hours * 3600) for hours in (48, 30, -1, -30, -50)}
    for p in names.values():
        p.write_bytes(b"x")
    just = tmp_path / bk.archive_name(now)
    just.write_bytes(b"x")
    deleted = bk.prune(tmp_path, keep_last=2, keep_days=3, now=now, made=just)
    # The newest two up to now (the one just made, an hour before), and the newest of each of the three days to
    # today (one two days back, the 8th; the 9th's is the one 30 hours back); a day after today is no day kept.
    assert sorted(deleted) == sorted([names[48], names[30]])
    # Even where every other backup outranks it by its name, the one just made stays.
    later = tmp_path / bk.archive_name(now + 3 * 86_400)
    later.write_bytes(b"x")
    assert just not in bk.prune(tmp_path, keep_last=1, keep_days=0, now=now - 86_400 * 5, made=just)
    assert just.exists()


def test_a_start_while_a_backup_holds_the_data_directory_waits_for_it_then_starts(account, tmp_path, spawn_ffe):
    """The hourly backup timer and a restart after a crash can meet: the start finds the directory held by the
    backup. That is no configuration error (exit 2: systemd would never start it again) and no other engine: the
    start says it waits for the backup, and goes on once the backup is done."""
    from ffe_engine.host import acquire_lock

    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd)
    lock = acquire_lock(cwd / "data", holder="backup")
    try:
        engine = spawn_ffe(cwd, "run", "--headless", "--max-bars", "3", env=env())
        wait_until(lambda: "waiting for the backup" in engine.stderr or not engine.alive(), timeout=30,
                   what="the start saying it waits for the backup")
        assert engine.alive(), engine.stderr
        assert f"(pid {os.getpid()})" in engine.stderr and "another ffe engine" not in engine.stderr, engine.stderr
    finally:
        os.close(lock)
    assert engine.wait(timeout=60) == 0, engine.stderr
    assert "engine started" in engine.stderr


def test_a_backup_to_a_path_that_is_a_file_says_it_is_not_a_directory(account, tmp_path):
    """`--to` names the directory backups go into: a file there is bad input (exit 2), said as such, not as a disk
    that cannot be written ("File exists")."""
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    proc = run_ffe(account, "backup", "--to", str(target), env=env())
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == f"ffe: error: {target}: not a directory (--to names the directory the backups go " \
                                  "into)", proc.stderr
    assert target.read_text() == "not a directory"


def test_a_backup_while_another_backup_holds_the_data_directory_says_so(account, tmp_path):
    """`ffe backup` beside a backup (or restore) of the same stopped account: it says who holds the directory, not
    that no engine is running, and exits 1 (try again once it has ended)."""
    from ffe_engine.host import acquire_lock

    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd)
    lock = acquire_lock(cwd / "data", holder="restore")
    try:
        proc = run_ffe(cwd, "backup", "--to", str(tmp_path / "b"), env=env())
    finally:
        os.close(lock)
    assert proc.returncode == 1, proc.stderr
    assert f"a restore (pid {os.getpid()}) holds" in proc.stderr and "no engine" not in proc.stderr, proc.stderr


def test_a_lock_file_caught_before_its_holder_is_written_is_no_other_engine(tmp_path):
    """The holder writes its name into the lock file just after taking the lock: one that names nobody yet, or a pid
    no longer alive, is not taken for another engine (exit 2, which systemd never retries)."""
    import fcntl

    from ffe_engine.host import DirectoryHeld, acquire_lock

    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / "ffe.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for written in (b"", b"999999999"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, written, 0)
            with pytest.raises(DirectoryHeld) as info:
                acquire_lock(data)
            assert info.value.holder == "unknown", (written, str(info.value))
    finally:
        os.close(fd)


def target_with_records(account: Path, target: Path) -> dict[Path, bytes]:
    """A copy of the account's data and logs at `target`: the records a restore --force would move aside."""
    shutil.copytree(account / "data", target / "data", ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    shutil.copytree(account / "logs", target / "logs")
    return {p: p.read_bytes() for d in ("data", "logs") for p in (target / d).iterdir()
            if p.is_file() and not p.name.endswith(".lock")}


def assert_untouched(before: dict[Path, bytes], target: Path) -> None:
    after = {p: p.read_bytes() for d in ("data", "logs") for p in (target / d).iterdir() if p.is_file()
             if not p.name.endswith(".lock")}
    assert {p: b for p, b in after.items() if p in before} == before
    assert [p.name for p in after if p not in before and not p.name.endswith((".lock", "-wal", "-shm"))] == []


def test_a_restore_onto_a_disk_without_room_for_it_refuses_before_moving_anything_aside(account, archive, tmp_path):
    """The data and log directories on a small disk (a tmpfs of their own) that holds the records there and little
    more: the restore says in one line that the files do not fit, exit 1, and the records there stay in place."""
    target = tmp_path / "t"
    before = target_with_records(account, target)
    used = sum(len(b) for b in before.values())
    disk = tmp_path / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; cp -a "$3/data" "$3/logs" "$2/" || exit 97; '
              'shift 3; "$@"; rc=$?; rm -rf "$0/data" "$0/logs"; cp -a "$DISK/data" "$DISK/logs" "$0/" || exit 98; '
              'exit $rc')
    spaces = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    cmd = ["unshare", *spaces, "sh", "-c", script, str(target), str(used + 256 * 1024), str(disk), str(target),
           *ffe_cmd("restore", str(archive), "--force", "--data-dir", str(disk / "data"), "--log-dir",
                    str(disk / "logs"))]
    proc = subprocess.run(cmd, cwd=account, env={**env(), "DISK": str(disk)}, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    [line] = proc.stderr.splitlines()
    assert line.startswith("ffe: error: ") and "nothing restored" in line and "Traceback" not in proc.stderr, line
    assert "room" in line or "space" in line, line
    assert_untouched(before, target)


def test_a_restore_that_fails_putting_the_trail_in_place_puts_the_records_there_back(account, archive, tmp_path):
    """The restored database is in place when the trail cannot be written (a directory left where its partial copy
    goes): the restore takes the new database out and puts back what it had moved aside, and says so in one line
    (exit 1): the directories are as they were."""
    target = tmp_path / "t"
    before = target_with_records(account, target)
    (target / "logs" / "audit.jsonl.restoring").mkdir()
    proc = run_ffe(account, "restore", str(archive), "--force", "--data-dir", str(target / "data"),
                   "--log-dir", str(target / "logs"), env=env())
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    [line] = proc.stderr.splitlines()
    assert line.startswith("ffe: error: ") and "nothing restored" in line and "Traceback" not in proc.stderr, line
    (target / "logs" / "audit.jsonl.restoring").rmdir()
    assert_untouched(before, target)


def test_a_restore_run_again_after_one_killed_midway_keeps_the_kill_switch_of_the_records_it_moved_aside(
        account, archive, tmp_path, spawn_ffe):
    """A restore killed (SIGKILL, a power cut) after it moved a HALTED account's records aside and before it put the
    backup's in place; the runbook says to run it again. That second run finds no database, only the records moved
    aside: it keeps their HALTED all the same, or the account would start trading again."""
    cwd, engine = engine_running(account, tmp_path / "live", spawn_ffe)
    halt = run_ffe(cwd, "ctl", "halt")
    assert halt.returncode == 0, halt.stderr
    engine.send(15)
    assert engine.wait(60) == 0, engine.stderr
    for directory in (cwd / "data", cwd / "logs"):  # what the killed restore left: every record moved aside
        for p in list(directory.iterdir()):
            if p.name.startswith(("ffe.db", "audit")) and not p.name.endswith(".lock"):
                p.rename(p.with_name(p.name + ".before-restore-20261201T000000Z"))
    assert not (cwd / "data" / "ffe.db").exists()
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout, proc.stdout
    kept_by_the_restore(cwd / "data" / "ffe.db")


def halted_in_the_wal_alone(account: Path, cwd: Path) -> Path:
    """A copy of the account whose engine was killed right after its HALTED was stored: in the WAL, not yet in the
    database file. Returns the database."""
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    db = cwd / "data" / "ffe.db"
    writer = ("import os, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
              "c.execute(\"UPDATE engine_state SET state = 'HALTED', reason = 'kill switch', by = 'operator'\")\n"
              "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", writer, str(db)], check=True)
    assert (cwd / "data" / "ffe.db-wal").stat().st_size > 0
    return db


def moved_aside_by_a_killed_restore(cwd: Path, *, but: tuple[str, ...] = ()) -> None:
    for p in list((cwd / "data").iterdir()) + list((cwd / "logs").iterdir()):
        if p.name.startswith(("ffe.db", "audit")) and not p.name.endswith(".lock") and p.name not in but:
            p.rename(p.with_name(p.name + ".before-restore-20261201T000000Z"))


@pytest.mark.parametrize("database", ["missing", "empty"])
def test_doctor_says_a_restore_cut_short_as_the_start_does(account, tmp_path, database):
    """No database (or an empty one), the records moved aside by a restore killed midway: the start refuses naming
    the restore's files, never a fresh start over them, and `ffe doctor` says the same, not "no database here"."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    moved_aside_by_a_killed_restore(cwd)
    if database == "empty":
        (cwd / "data" / "ffe.db").write_bytes(b"")
    for command in (("run", "--headless", "--max-bars", "3"), ("doctor",)):
        proc = run_ffe(cwd, *command)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        line = [ln for ln in proc.stderr.splitlines() if ln.startswith("ffe: error: ")][-1]
        assert "no database" in line and "but a restore's files are there" in line, line
        assert "ffe.db.before-restore-" in line, line
        assert "ffe restore BACKUP --force" in line, line
    assert not (cwd / "logs" / "audit.jsonl").exists()  # no fresh trail begun
    assert (cwd / "data" / "ffe.db").exists() == (database == "empty")
    assert database == "missing" or (cwd / "data" / "ffe.db").stat().st_size == 0


def test_a_restore_run_again_keeps_a_halted_state_the_killed_one_moved_aside_in_its_wal(account, archive, tmp_path):
    """A restore killed midway moved the database, its -wal and -shm aside under new names (SQLite reads a WAL only
    by its own name). Run again, the restore still finds the HALTED the WAL alone held, and keeps it."""
    cwd = tmp_path / "acct"
    db = halted_in_the_wal_alone(account, cwd)
    moved_aside_by_a_killed_restore(cwd)
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout, proc.stdout
    with sqlite3.connect(db) as conn:
        ((state, reason),) = conn.execute("SELECT state, reason FROM engine_state").fetchall()
    assert state == "HALTED" and "kill switch" in reason, (state, reason)


def test_a_restore_run_again_reads_the_wal_a_killed_one_left_in_place_beside_the_database_it_moved(account, archive,
                                                                                                  tmp_path):
    """Killed between moving the database aside and moving its WAL: the WAL is still there under its own name."""
    cwd = tmp_path / "acct"
    db = halted_in_the_wal_alone(account, cwd)
    moved_aside_by_a_killed_restore(cwd, but=("ffe.db-wal", "ffe.db-shm"))
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db) as conn:
        ((state,),) = conn.execute("SELECT state FROM engine_state").fetchall()
    assert state == "HALTED" and "HALTED" in proc.stdout, (state, proc.stdout)


def test_a_restore_run_again_keeps_the_account_halted_when_the_database_a_killed_one_moved_aside_cannot_be_read(
        account, archive, tmp_path):
    """Its state cannot be told (a damaged file): a HALTED there must not be lost, so the restored account is HALTED,
    as over a database that cannot be read, saying which; the file stays where it was for a post-mortem."""
    cwd = tmp_path / "acct"
    halted_in_the_wal_alone(account, cwd)
    moved_aside_by_a_killed_restore(cwd)
    aside = cwd / "data" / "ffe.db.before-restore-20261201T000000Z"
    with open(aside, "r+b") as f:
        f.write(b"\0" * 100)
    damaged = aside.read_bytes()
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "could not be read" in proc.stdout, proc.stdout
    ((state, reason),) = db_rows(cwd / "data" / "ffe.db", "SELECT state, reason FROM engine_state")
    assert state == "HALTED" and aside.name in reason and "could not be read" in reason, (state, reason)
    assert aside.read_bytes() == damaged


def test_a_restore_onto_a_log_directory_it_cannot_write_says_so_for_a_restore(account, archive, tmp_path):
    """The log directory cannot be written (its lock cannot be taken): one line that says nothing was restored and
    to restore again, not the engine's "then start again"; nothing is moved."""
    from test_disk_failures import read_only

    target = tmp_path / "t"
    before = target_with_records(account, target)
    with read_only(target / "logs"):
        proc = run_ffe(account, "restore", str(archive), "--force", "--data-dir", str(target / "data"),
                       "--log-dir", str(target / "logs"), env=env())
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    [line] = proc.stderr.splitlines()
    assert "nothing restored" in line and "restore again" in line and "start again" not in line, line
    assert_untouched(before, target)


def test_a_restore_over_a_database_it_cannot_read_restores_the_account_halted(account, archive, tmp_path):
    """The runbook's own case: the database is damaged, the start refuses it, the operator restores the newest
    backup with --force. Whether the records replaced were HALTED cannot be told from them, so the restored account
    is HALTED, for the operator to re-arm once satisfied, never trading again on a kill switch the damage hid."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    db = cwd / "data" / "ffe.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("UPDATE engine_state SET state = 'HALTED', reason = 'kill switch', by = 'operator'")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db, "r+b") as f:
        f.write(b"\0" * 100)  # its header gone: nothing in it can be read
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout and "could not be read" in proc.stdout, proc.stdout
    with sqlite3.connect(db) as conn:
        ((state, reason, by),) = conn.execute("SELECT state, reason, by FROM engine_state").fetchall()
    assert state == "HALTED" and by == "restore" and "could not be read" in reason, (state, reason, by)
    assert list((cwd / "data").glob("ffe.db.before-restore-*"))  # the damaged file kept for the post-mortem
    with sqlite3.connect(db) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    started = run_ffe(cwd, "run", "--headless", "--max-bars", "20", env=env())
    assert started.returncode == 0, started.stderr
    assert re.search(r"engine started.*state=HALTED", started.stderr), started.stderr[-2000:]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == orders  # nothing sent


def test_a_restore_moves_a_rollback_journal_aside_with_the_database_it_replaces(account, archive, tmp_path):
    """A journal left beside the database (a start killed in its first moments) belongs to the database it was
    left by: beside the restored one, the next open would roll its pages into it (and wreck it). It is moved aside
    with the database it belongs to."""
    cwd = tmp_path / "acct"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    db = cwd / "data" / "ffe.db"
    journal = cwd / "data" / "ffe.db-journal"
    journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + os.urandom(1016))  # a journal's header, then pages
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert not journal.exists() and list((cwd / "data").glob("ffe.db-journal.before-restore-*")), proc.stdout
    assert ffe_in_process(cwd, "doctor").returncode == 0


def test_a_restore_over_a_missing_database_beside_its_wal_restores_the_account_halted(account, archive, tmp_path):
    """The database file is gone but its WAL is there: the newest records (a HALTED among them, maybe) cannot be read
    without it, so the restored account is HALTED, as over any database that cannot be read."""
    cwd = tmp_path / "acct"
    db = halted_in_the_wal_alone(account, cwd)
    db.unlink()
    proc = run_ffe(cwd, "restore", str(archive), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "HALTED" in proc.stdout, proc.stdout
    with sqlite3.connect(db) as conn:
        ((state, by),) = conn.execute("SELECT state, by FROM engine_state").fetchall()
    assert (state, by) == ("HALTED", "restore")
    assert list((cwd / "data").glob("ffe.db-wal.before-restore-*"))


# ------------------------------------------------------------------------------------------------ backtest runs
@pytest.fixture(scope="module")
def backtest_runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """A `full` and a `trades` backtest run of the BTC sample's first 400 bars: level -> (data dir, log dir)."""
    cwd = tmp_path_factory.mktemp("backtests")
    (cwd / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 400)))
    runs = {}
    for level in ("full", "trades"):
        before = set((cwd / "data" / "backtests").glob("*")) if (cwd / "data" / "backtests").exists() else set()
        proc = run_ffe(cwd, "backtest", "BTC-USD_1h.csv", "--records", level, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (data,) = set((cwd / "data" / "backtests").glob("*")) - before
        runs[level] = data, cwd / "logs" / "backtests" / data.name
    return runs


def files_of(*dirs: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file()}


def run_copy(run: tuple[Path, Path], told_by: str, tmp_path: Path, request) -> tuple[Path, Path]:
    """A copy of a backtest run's folders (data, logs) that says what it is `told_by` its database, moved out of
    data/backtests/, or by its folder only (its record level taken out, as a run made before runs stored it)."""
    data, logs = run
    if told_by == "its_database":
        run_data, run_logs = tmp_path / "moved" / "data", tmp_path / "moved" / "logs"
    else:  # in a short folder: the run's name takes room the control socket's path has not to spare
        short = Path(tempfile.mkdtemp(prefix="ffe-bt-"))
        request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
        run_data = short / "data" / "backtests" / data.name
        run_logs = short / "logs" / "backtests" / data.name
    shutil.copytree(data, run_data)
    if logs.exists():
        shutil.copytree(logs, run_logs)
    if told_by == "its_folder":
        with sqlite3.connect(run_data / "ffe.db") as conn:
            conn.execute("DELETE FROM kv WHERE key = 'backtest_records'")
        conn.close()
    return run_data, run_logs


@pytest.mark.parametrize("level", ["full", "trades"])
@pytest.mark.parametrize("told_by", ["its_database", "its_folder"])
def test_a_backup_of_a_backtest_run_is_refused_in_one_line_and_writes_nothing(backtest_runs, tmp_path, request,
                                                                               level, told_by):
    """A backtest run is a folder of files to copy as they are, not an account: `ffe backup` of one refuses it up
    front (exit 2, one line naming the folder), rather than writing a backup with a false warning of a damaged trail
    that its own verify and restore then refuse. A run says what it is in its database wherever its folders were
    moved; a run made before runs stored their record level is told by its folder, data/backtests/RUN."""
    run_data, run_logs = run_copy(backtest_runs[level], told_by, tmp_path, request)
    before = files_of(run_data, run_logs)
    to = tmp_path / "backups"
    proc = run_ffe(tmp_path, "backup", "--data-dir", str(run_data), "--log-dir", str(run_logs), "--to", str(to))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ffe: error: {run_data}: a backtest run"), proc.stderr
    assert "damaged" not in proc.stderr and not proc.stdout, proc.stdout
    assert not to.exists() or not any(to.iterdir())
    assert files_of(run_data, run_logs) == before  # nothing written into the run's folders, not even a lock file


@pytest.mark.parametrize("level", ["full", "trades"])
@pytest.mark.parametrize("told_by", ["its_database", "its_folder"])
def test_an_engine_started_on_a_backtest_run_s_folder_is_refused_in_one_line_and_writes_nothing(
        backtest_runs, tmp_path, request, level, told_by):
    """`ffe run --data-dir` pointed at a backtest run's folder is a wrong directory, not damage: one line saying
    what it is (exit 2), not "the database is damaged: restore it", and nothing written into the run's folders (no
    lock file, no new record)."""
    run_data, run_logs = run_copy(backtest_runs[level], told_by, tmp_path, request)
    before = files_of(run_data, run_logs)
    proc = run_ffe(tmp_path, "run", "--headless", "--data-dir", str(run_data), "--log-dir", str(run_logs))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ffe: error: {run_data}: a backtest run"), proc.stderr
    assert "damaged" not in proc.stderr and "restore" not in proc.stderr, proc.stderr
    assert files_of(run_data, run_logs) == before


@pytest.mark.parametrize("level", ["full", "trades"])
def test_a_restore_into_a_backtest_run_s_folder_is_refused_in_one_line_even_with_force(account, archive,
                                                                                        backtest_runs, level):
    """A restore puts an account in place: into a backtest run's folder it is a wrong --data-dir. Refused (exit 2,
    one line), with --force too, which would otherwise move the run's database aside; the run's files stay as they
    were."""
    data, logs = backtest_runs[level]
    before = files_of(data, logs)
    proc = run_ffe(account, "restore", str(archive), "--data-dir", str(data), "--log-dir", str(logs), "--force")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ffe: error: {data}: a backtest run"), proc.stderr
    assert "nothing restored" in lines[0], lines
    assert files_of(data, logs) == before


def test_a_backup_that_holds_a_backtest_run_fails_verify_and_restore_saying_so(account, archive, backtest_runs,
                                                                              tmp_path):
    """A backup an earlier release took of a backtest run: verify and restore say what it holds (exit 1, nothing
    restored), not that an account's records were lost."""
    work = tmp_path / "work"
    unpack(archive, work)
    data, _ = backtest_runs["full"]
    shutil.copyfile(data / "ffe.db", work / bk.DB_NAME)
    path = repack(work, tmp_path / archive.name)
    proc = verify(account, path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "a backtest run's records" in proc.stderr and "paper_venue" not in proc.stderr, proc.stderr
    target = tmp_path / "t"
    proc = run_ffe(account, "restore", str(path), "--data-dir", str(target / "data"), "--log-dir",
                   str(target / "logs"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "a backtest run's records" in proc.stderr and "nothing restored" in proc.stderr, proc.stderr
    assert not (target / "data" / "ffe.db").exists()


@pytest.mark.parametrize("command", [("doctor",), ("audit", "verify"), ("audit", "tail", "-n", "3")])
def test_a_backtest_run_s_database_read_beside_the_account_s_trail_is_refused_naming_the_run_s_log_folder(
        backtest_runs, command):
    """`--data-dir data/backtests/RUN` without the run's own `--log-dir`: the account's trail beside a run's
    database is no damage of either (doctor and verify said the trail was edited or cut short, tail printed the
    account's records as the run's); one line names the run's log folder, exit 2. With it, they read the run."""
    data, logs = backtest_runs["full"]
    cwd = data.parent.parent.parent
    before = files_of(data, logs, cwd / "logs" / "audit.jsonl")
    proc = run_ffe(cwd, *command, "--data-dir", str(data))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ffe: error: {data}: a backtest run's records"), proc.stderr
    assert f"--log-dir {logs.relative_to(cwd)} " in lines[0], lines  # as the account's own --log-dir says it
    assert proc.stdout == ""
    proc = run_ffe(cwd, *command, "--data-dir", str(data), "--log-dir", str(logs))
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert files_of(data, logs, cwd / "logs" / "audit.jsonl") == before


def test_a_backup_of_a_backtest_run_given_without_its_log_folder_names_the_run_s_own(backtest_runs):
    """The refusal says to copy the run's folders as they are: without `--log-dir`, the log folder it names is the
    run's own (logs/backtests/RUN), not the account's logs, which hold the account's trail."""
    data, logs = backtest_runs["full"]
    cwd = data.parent.parent.parent
    proc = run_ffe(cwd, "backup", "--data-dir", str(data), "--to", str(cwd / "backups"))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f"({data} and {logs.relative_to(cwd)})" in line, line


class _Killed(BaseException):
    """The restore's process killed (SIGKILL, a power cut) at that moment: nothing of it runs after."""


@pytest.mark.parametrize("killed_at", ["audit.jsonl", "config.from-backup.toml", "ffe.db"])
def test_a_restore_killed_while_it_puts_its_files_in_place_leaves_a_start_that_refuses(
        account, archive, tmp_path, monkeypatch, killed_at):
    """The database is the last file a restore puts in place: killed before it, the start finds no database beside
    the records moved aside and refuses, saying to restore again (runbook: Restore), rather than start on a restored
    database whose audit trail or configuration copy never came."""
    cwd = tmp_path / "cwd"
    shutil.copytree(account, cwd, ignore=shutil.ignore_patterns("*.sock", "*.lock"))
    put = restore_mod._put

    def killed(src: Path, dest: Path) -> None:
        if dest.name == killed_at:
            raise _Killed()
        put(src, dest)

    monkeypatch.setattr(restore_mod, "_put", killed)
    with pytest.raises(_Killed):
        ffe_in_process(cwd, "restore", str(archive), "--force", env=env())
    monkeypatch.undo()
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "1", env=env())
    assert proc.returncode == 1, proc.stderr  # as for records the start cannot take
    assert "a restore was cut short" in proc.stderr.strip().splitlines()[-1], proc.stderr
    again = run_ffe(cwd, "restore", str(archive), "--force", env=env())
    assert again.returncode == 0, again.stderr
    assert run_ffe(cwd, "run", "--headless", "--max-bars", "1", env=env()).returncode == 0
