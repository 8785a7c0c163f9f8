"""The database a SIGKILLed engine left, then damaged (cut short, emptied, removed), beside the WAL the kill left
with the newest committed pages: every command that refuses it leaves its files as they were found, the WAL
byte for byte, so that it can still be salvaged. SQLite deletes the WAL of a database whose main file is empty
when it opens it (even read-only), and merges it into a damaged file when a writing connection closes.

The records come from a real headless paper engine killed with SIGKILL; every command is a real `ffe` process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import FfeProcess, count_events, ffe_env, run_ffe, wait_until

NAMES = ("ffe.db", "ffe.db-wal", "ffe.db-shm")


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """The data and log directories of a paper engine killed with SIGKILL after a few hundred bars (a WAL holding
    records beside the database), and a backup taken of them afterwards."""
    cwd = tmp_path_factory.mktemp("killed")
    first = run_ffe(cwd, "run", "--headless", "--max-bars", "20")  # a database checkpointed at its stop
    assert first.returncode == 0, first.stderr
    audit = cwd / "logs" / "audit.jsonl"
    p = FfeProcess(cwd, ("run", "--headless"), ffe_env(FFE_MARKET__SPEED="100"), "engine")
    try:
        wait_until(lambda: count_events(audit, "decision") >= 300 or not p.alive(), what="a few hundred bars")
        assert p.alive(), p.stderr
    finally:
        p.send(signal.SIGKILL)
        p.wait()
    assert (cwd / "data" / "ffe.db-wal").stat().st_size > 0
    backup = run_ffe(cwd, "backup", "--to", str(cwd / "backups"))
    assert backup.returncode == 0, backup.stderr
    return cwd


def copy_of(killed: Path, tmp_path: Path) -> Path:
    for name in ("data", "logs"):  # not the killed engine's socket and lock files
        shutil.copytree(killed / name, tmp_path / name, ignore=shutil.ignore_patterns("ffe.sock*", "*.lock"))
    return tmp_path


def files(cwd: Path) -> dict[str, bytes | None]:
    """The database's files as they are: their bytes, None for one that is not there."""
    return {name: (cwd / "data" / name).read_bytes() if (cwd / "data" / name).exists() else None for name in NAMES}


def cut_to(size: int):
    def damage(db: Path) -> None:
        os.truncate(db, size)
    damage.__name__ = f"cut_to_{size}_bytes"
    return damage


def removed(db: Path) -> None:
    db.unlink()


DAMAGES = [cut_to(0), cut_to(100), cut_to(4096), cut_to(100_000), removed]


def assert_left_as_found(cwd: Path, before: dict[str, bytes | None], proc: subprocess.CompletedProcess) -> None:
    after = files(cwd)
    assert after["ffe.db-wal"] == before["ffe.db-wal"], f"the WAL was changed or removed: {proc.stderr[-2000:]}"
    assert after["ffe.db"] == before["ffe.db"], f"the damaged database was changed: {proc.stderr[-2000:]}"
    # The -shm is SQLite's index of the WAL, which its readers update; it is never removed.
    assert (after["ffe.db-shm"] is None) == (before["ffe.db-shm"] is None), proc.stderr[-2000:]


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffe: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_a_refused_start_leaves_the_damaged_database_and_its_wal_as_they_were(killed, tmp_path, damage):
    cwd = copy_of(killed, tmp_path)
    damage(cwd / "data" / "ffe.db")
    before = files(cwd)
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    assert "data/ffe.db" in line and "engine started" not in proc.stderr, line
    assert_left_as_found(cwd, before, proc)
    if damage.__name__ in ("cut_to_0_bytes", "removed"):
        assert "ffe.db-wal" in line, line  # the WAL is named: it holds the newest records, for a salvage


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_doctor_names_the_damaged_database_and_leaves_it_and_its_wal_as_they_were(killed, tmp_path, damage):
    cwd = copy_of(killed, tmp_path)
    damage(cwd / "data" / "ffe.db")
    before = files(cwd)
    proc = run_ffe(cwd, "doctor", timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    assert "data/ffe.db" in line and "is --data-dir right" not in line, line
    assert_left_as_found(cwd, before, proc)
    if damage.__name__ in ("cut_to_0_bytes", "removed"):
        assert "ffe.db-wal" in line, line


def test_doctor_on_an_emptied_database_without_its_wal_says_it_was_lost(killed, tmp_path):
    """No WAL left, but an audit trail with records: the database was lost, not a wrong --data-dir."""
    cwd = copy_of(killed, tmp_path)
    for name in NAMES[1:]:
        (cwd / "data" / name).unlink()
    os.truncate(cwd / "data" / "ffe.db", 0)
    proc = run_ffe(cwd, "doctor")
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc)
    assert "data/ffe.db" in line and "lost" in line and "is --data-dir right" not in line, line
    assert (cwd / "data" / "ffe.db").stat().st_size == 0


READERS = [("audit", "verify"), ("audit", "tail", "-n", "3"), ("audit", "show", "no-such-id"),
           ("report", "trades"), ("config", "check"), ("backup", "--to", "made")]


@pytest.mark.parametrize("damage", [cut_to(0), cut_to(100_000), removed], ids=lambda f: f.__name__)
@pytest.mark.parametrize("args", READERS, ids=lambda a: "_".join(a[:2]))
def test_the_read_commands_and_backup_leave_the_damaged_database_and_its_wal_as_they_were(killed, tmp_path, damage,
                                                                                           args):
    cwd = copy_of(killed, tmp_path)
    damage(cwd / "data" / "ffe.db")
    before = files(cwd)
    proc = run_ffe(cwd, *args, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert_left_as_found(cwd, before, proc)
    if args[0] == "backup":
        assert proc.returncode == 1 and not list((cwd / "made").glob("*.tar.zst")), proc.stderr
        assert "data/ffe.db" in one_line(proc)


@pytest.mark.parametrize("damage", [cut_to(0), cut_to(100_000)], ids=lambda f: f.__name__)
def test_restore_refused_leaves_the_damaged_database_and_its_wal_and_forced_moves_them_aside_whole(killed, tmp_path,
                                                                                                   damage):
    cwd = copy_of(killed, tmp_path)
    damage(cwd / "data" / "ffe.db")
    before = files(cwd)
    (backup,) = (killed / "backups").glob("*.tar.zst")
    refused = run_ffe(cwd, "restore", str(backup))
    assert refused.returncode == 1 and "--force" in one_line(refused), refused.stderr
    assert_left_as_found(cwd, before, refused)

    forced = run_ffe(cwd, "restore", str(backup), "--force")
    assert forced.returncode == 0, forced.stderr
    for name in ("ffe.db", "ffe.db-wal"):
        (aside,) = (cwd / "data").glob(f"{name}.before-restore-*")
        assert aside.read_bytes() == before[name], f"{name} was changed before it was moved aside"


def test_an_empty_database_file_with_no_wal_and_no_trail_is_still_a_first_start(tmp_path):
    """The file a first start killed at once leaves (created, nothing written yet): nothing to keep, so the next
    start begins the account there."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ffe.db").write_bytes(b"")
    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "data" / "ffe.db").stat().st_size > 0


@pytest.mark.parametrize("command", [("doctor",), ("backup",)], ids=lambda c: " ".join(c))
def test_a_removed_database_beside_a_trail_with_records_is_called_lost_as_the_start_calls_it(killed, tmp_path,
                                                                                              command):
    """The database file removed (and its WAL), its audit trail still holding records: the start refuses it as a
    lost database; `ffe doctor` and `ffe backup` say the same, not "no database here (is --data-dir right?)"."""
    cwd = copy_of(killed, tmp_path)
    for name in NAMES:
        (cwd / "data" / name).unlink(missing_ok=True)
    started = run_ffe(cwd, "run", "--headless", "--max-bars", "1")
    assert started.returncode == 1 and "lost" in one_line(started), started.stderr[-2000:]
    proc = run_ffe(cwd, *command)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    line = one_line(proc)
    assert "data/ffe.db" in line and "lost" in line and "is --data-dir right" not in line, line
    assert not (cwd / "data" / "ffe.db").exists()


def salt_written_over(wal: Path) -> None:
    with open(wal, "r+b") as f:
        f.seek(16)
        f.write(b"\xde\xad\xbe\xef")


def a_middle_frame_s_page_flipped(wal: Path) -> None:
    """One byte of a page in a frame about halfway through the log: every commit after it is lost to SQLite, which
    stops reading the log at the first frame whose checksum fails."""
    page = int.from_bytes(wal.read_bytes()[8:12], "big")
    frames = (wal.stat().st_size - 32) // (24 + page)
    at = 32 + (frames // 2) * (24 + page) + 24 + 100
    with open(wal, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", [salt_written_over, a_middle_frame_s_page_flipped], ids=lambda f: f.__name__)
def test_a_damaged_wal_a_kill_left_is_refused_not_dropped(killed, tmp_path, damage):
    """The WAL a killed engine left, damaged (its header's salt written over; a page flipped halfway through it):
    SQLite would read the database without the commits it holds (past the damage) and a start would reset it, the
    records gone and called never committed. The start and `ffe doctor` refuse it in one line naming it, and leave it
    as it was, for a salvage."""
    cwd = copy_of(killed, tmp_path)
    damage(cwd / "data" / "ffe.db-wal")
    before = files(cwd)
    for args in (("run", "--headless", "--max-bars", "3"), ("doctor",), ("report", "trades"), ("audit", "verify"),
                 ("backup", "--to", "backups-after")):
        proc = run_ffe(cwd, *args, timeout=60)
        assert proc.returncode == (2 if args[0] == "audit" else 1), proc.stderr[-3000:]  # as for a lost database
        line = one_line(proc)
        assert "ffe.db-wal" in line and "damaged" in line and "engine started" not in proc.stderr, line
        assert_left_as_found(cwd, before, proc)
    # Moved aside, as the line says, the start goes on without its records, which the trail holds: set aside, said.
    (cwd / "data" / "ffe.db-wal").rename(cwd / "data" / "ffe.db-wal.damaged")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "3", timeout=60)
    assert proc.returncode == 0 and "records the database never committed were set aside" in proc.stderr, \
        proc.stderr[-3000:]
