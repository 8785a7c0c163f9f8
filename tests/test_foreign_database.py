"""What sits at the database's path that is not an ffe database (another application's SQLite file, a directory, an
empty file) is refused in one line by every command that would open it, and left exactly as it was found: a start
never takes another application's database over as a new account.

Starts, backups and restores are real `ffe` processes over real files; the read commands' variants run in the test
process through the command's own entry point."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from conftest import ffe_in_process, run_ffe, starter_config

SIDE = ("ffe.db-wal", "ffe.db-shm", "ffe.db-journal")


def users(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'secretdata')")
    conn.close()


def users_and_kv(db: Path) -> None:
    """Another application's database that happens to have a table of one of ffe's names."""
    users(db)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE kv (a, b)")
    conn.close()


def users_in_wal_mode(db: Path) -> None:
    """Opened the usual way, even read-only, such a database gets -wal and -shm files beside it."""
    users(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def users_with_a_schema_version(db: Path) -> None:
    """Applications number their schemas with user_version too."""
    users(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=1")
    conn.close()


def foreign_dir(tmp_path: Path, make: Callable[[Path], None]) -> tuple[Path, str]:
    starter_config(tmp_path)
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "ffe.db"
    make(db)
    return db, hashlib.sha256(db.read_bytes()).hexdigest()


def one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffe: error: "), proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert "secretdata" not in lines[0]
    return lines[0]


def assert_untouched(db: Path, digest: str) -> None:
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, "the foreign database was changed"
    assert [p.name for p in db.parent.iterdir() if p.name in SIDE] == [], "files were created beside it"


@pytest.mark.parametrize("make", [users, users_and_kv, users_in_wal_mode, users_with_a_schema_version],
                         ids=lambda f: f.__name__)
def test_a_start_over_another_applications_database_is_refused_and_leaves_it_as_it_was(tmp_path, make):
    db, digest = foreign_dir(tmp_path, make)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", timeout=60)
    one_line(proc, 2, "data/ffe.db", "not an ffe database", "users")
    assert "engine started" not in proc.stderr
    assert_untouched(db, digest)
    assert not (tmp_path / "logs" / "audit.jsonl").exists() or not (tmp_path / "logs" / "audit.jsonl").stat().st_size


@pytest.mark.parametrize("args", [("doctor",), ("backup", "--to", "b"), ("audit", "show", "d-1"),
                                  ("report", "trades")], ids=lambda a: a[0])
def test_the_read_commands_refuse_another_applications_database_alike(tmp_path, args):
    db, digest = foreign_dir(tmp_path, users)
    one_line(ffe_in_process(tmp_path, *args), 2, "data/ffe.db", "not an ffe database", "users")
    assert_untouched(db, digest)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_config_check_says_the_next_start_would_refuse_another_applications_database(tmp_path):
    db, digest = foreign_dir(tmp_path, users_in_wal_mode)
    proc = ffe_in_process(tmp_path, "config", "check")
    assert proc.returncode == 0, proc.stderr
    assert "not an ffe database" in proc.stdout and "(exit 2)" in proc.stdout, proc.stdout[-500:]
    assert_untouched(db, digest)


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> tuple[Path, Path]:
    """A paper run's directories, and a backup of them."""
    cwd = tmp_path_factory.mktemp("account")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5", timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = run_ffe(cwd, "backup", "--to", "backups")
    assert proc.returncode == 0, proc.stderr
    (archive,) = (cwd / "backups").glob("ffe-backup-*.tar.zst")
    return cwd, archive


def account_copy(account: tuple[Path, Path], tmp_path: Path) -> Path:
    """The account's directories copied into tmp_path (with its configuration), stopped cleanly: its database."""
    cwd, _ = account
    shutil.copytree(cwd / "data", tmp_path / "data")
    shutil.copytree(cwd / "logs", tmp_path / "logs")
    for stale in SIDE:
        (tmp_path / "data" / stale).unlink(missing_ok=True)
    starter_config(tmp_path)
    return tmp_path / "data" / "ffe.db"


def test_a_table_ffe_never_writes_beside_only_part_of_ffes_tables_is_refused(account, tmp_path):
    """ffe's schema version and some of its tables beside another application's: not clearly ffe's, refused."""
    db = account_copy(account, tmp_path)
    users(db)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE provider_scores")
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", timeout=60)
    one_line(proc, 2, "data/ffe.db", "not an ffe database", "table users")
    assert_untouched(db, digest)


def operators_objects(db: Path) -> None:
    """What an operator adds beside ffe's tables for reports of their own: a view, a table, an index."""
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE VIEW my_daily AS SELECT date(closed_ts / 1000, 'unixepoch') AS day, SUM(pnl) AS pnl "
                      "FROM trades GROUP BY day")
        conn.execute("CREATE TABLE my_notes (day TEXT, note TEXT)")
        conn.execute("INSERT INTO my_notes VALUES ('2026-01-01', 'quiet day')")
        conn.execute("CREATE INDEX my_fills_by_ts ON fills (ts)")
    conn.close()


def test_an_account_with_views_tables_and_indexes_an_operator_added_starts_and_backs_up(account, tmp_path):
    """ffe's schema version and every one of ffe's tables: clearly ffe's. What an operator added beside them for
    reports of their own changes nothing ffe writes or reads, and refuses nothing: the start, `ffe doctor`, a backup,
    its verify and a restore take the account as it is, the operator's objects kept."""
    db = account_copy(account, tmp_path)
    operators_objects(db)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doctor = ffe_in_process(tmp_path, "doctor")
    assert doctor.returncode == 0 and doctor.stdout.startswith("ok: "), (doctor.stdout, doctor.stderr)
    proc = run_ffe(tmp_path, "backup", "--to", "b")
    assert proc.returncode == 0, proc.stderr
    (archive,) = (tmp_path / "b").glob("ffe-backup-*.tar.zst")
    proc = run_ffe(tmp_path, "restore", str(archive), "--data-dir", "r/data", "--log-dir", "r/logs")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(tmp_path / "r" / "data" / "ffe.db") as conn:
        assert conn.execute("SELECT note FROM my_notes").fetchall() == [("quiet day",)]
        conn.execute("SELECT * FROM my_daily").fetchall()
    conn.close()


@pytest.mark.parametrize("args", [("run", "--headless", "--max-bars", "3"), ("doctor",)], ids=lambda a: a[0])
def test_a_trigger_on_ffes_tables_is_refused_in_one_line_naming_it(account, tmp_path, args):
    """A trigger on one of ffe's tables runs inside ffe's own writes: it could change or add records behind the
    engine's back (or fail its writes), so the records would no longer be what ffe wrote. ffe makes none: refused,
    exit 2, naming the trigger and how to drop it, not as a wrong storage.path; left as it is."""
    db = account_copy(account, tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TRIGGER my_copy AFTER INSERT ON fills BEGIN "
                     "UPDATE kv SET updated_ts = 0 WHERE key = 'portfolio'; END")
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    proc = run_ffe(tmp_path, *args, timeout=60) if args[0] == "run" else ffe_in_process(tmp_path, *args)
    line = one_line(proc, 2, "data/ffe.db", "trigger my_copy on table fills", "DROP TRIGGER my_copy")
    assert "storage.path" not in line and "not an ffe database" not in line, line
    assert_untouched(db, digest)


def test_a_restore_onto_another_applications_database_is_refused_even_with_force(account, tmp_path):
    _, archive = account
    db, digest = foreign_dir(tmp_path, users)
    proc = run_ffe(tmp_path, "restore", str(archive), "--force", "--data-dir", "data", "--log-dir", "logs")
    one_line(proc, 2, "data/ffe.db", "not an ffe database", "nothing restored")
    assert_untouched(db, digest)
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.name.startswith("ffe.db")) == ["ffe.db"]


# ------------------------------------------------------------------------------------ a directory in its place
def test_a_start_over_a_directory_at_the_database_path_says_so(tmp_path):
    starter_config(tmp_path)
    (tmp_path / "data" / "ffe.db").mkdir(parents=True)
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3", timeout=60)
    line = one_line(proc, 2, "data/ffe.db", "is a directory, not a database")
    assert "free space" not in line
    assert (tmp_path / "data" / "ffe.db").is_dir() and not any((tmp_path / "data" / "ffe.db").iterdir())


@pytest.mark.parametrize("args", [("doctor",), ("backup", "--to", "b"), ("audit", "show", "d-1"),
                                  ("report", "trades"), ("restore", "x.tar.zst", "--force")], ids=lambda a: a[0])
def test_the_other_commands_say_a_directory_at_the_database_path_is_one(tmp_path, args):
    starter_config(tmp_path)
    (tmp_path / "data" / "ffe.db").mkdir(parents=True)
    if args[0] == "restore":  # the target is checked once the backup passed verify
        proc = run_ffe(tmp_path, "restore", str(restore_archive(tmp_path)), "--force")
    else:
        proc = ffe_in_process(tmp_path, *args)
    one_line(proc, 2, "data/ffe.db", "is a directory, not a database")
    assert (tmp_path / "data" / "ffe.db").is_dir()


def restore_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    assert run_ffe(src, "run", "--headless", "--max-bars", "3", timeout=60).returncode == 0
    assert run_ffe(src, "backup", "--to", "b").returncode == 0
    (archive,) = (src / "b").glob("ffe-backup-*.tar.zst")
    return archive


def test_backup_verify_of_a_directory_says_it_is_one(tmp_path):
    proc = ffe_in_process(tmp_path, "backup", "verify", str(tmp_path))
    line = one_line(proc, 2, str(tmp_path), "is a directory")
    assert "no such" not in line


# ------------------------------------------------------------------------------------ no records at all
def emptied(db: Path) -> None:
    db.write_bytes(b"")


def no_table(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=0")
    conn.execute("VACUUM")  # a database file of its header page alone
    conn.close()
    assert db.stat().st_size > 0


@pytest.mark.parametrize("make, words", [(emptied, "empty (0 bytes)"), (no_table, "holds no table")],
                         ids=["empty", "no_table"])
def test_backup_of_a_database_without_records_is_no_database_here_as_doctor_says(tmp_path, make, words):
    db, digest = foreign_dir(tmp_path, make)
    doctor = one_line(ffe_in_process(tmp_path, "doctor"), 2, "data/ffe.db", words)
    backup = one_line(run_ffe(tmp_path, "backup", "--to", "b"), 2, "data/ffe.db", words)
    assert backup == doctor
    assert_untouched(db, digest)
