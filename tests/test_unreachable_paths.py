"""A path the operator gives that cannot be reached (a directory closed to this user, as the engine's 0700 ones are
to any other; a name longer than the file system takes; a loop of symbolic links) is one line naming the path and
why, exit 2, whichever command meets it first: never a traceback. A database or audit file this user cannot read
is said the same way by every command that reads it.

As root, each `ffe` here starts without the capabilities that pass files' modes (without_permission_overrides), so
a directory or file closed to it refuses it as it would any user.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import forked_ffe
from conftest import BTC_CSV, ffe_cmd, ffe_env, run_ffe, sample_head, starter_config, without_permission_overrides

LONG = "x" * 300  # longer than a file name can be (255 bytes on Linux file systems)


def run_closed(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`ffe ARGS` in cwd, refused by file modes as any user is."""
    return forked_ffe.run(ffe_cmd(*args), cwd=cwd, env=ffe_env(), capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, preexec_fn=without_permission_overrides)


def one_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The process's one error line, after checking it exited `code` with nothing else on stderr."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffe: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> Path:
    """A directory with a config, and an account's data and logs from a short run."""
    cwd = tmp_path_factory.mktemp("account")
    proc = run_ffe(cwd, "run", "--headless", "--max-bars", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def copy_of(account: Path, tmp_path: Path) -> Path:
    shutil.copy(account / "config.toml", tmp_path / "config.toml")
    shutil.copytree(account / "data", tmp_path / "data")
    shutil.copytree(account / "logs", tmp_path / "logs")
    return tmp_path


# ---------------------------------------------------------------------------------------------------- closed
CLOSED = [  # each command, and the path under `other` it is told of
    (["doctor", "--data-dir", "other"], "other"),
    (["report", "trades", "--data-dir", "other"], "other"),
    (["report", "providers", "--data-dir", "other"], "other"),
    (["audit", "show", "ffe-1", "--data-dir", "other"], "other"),
    (["audit", "tail", "--log-dir", "other/logs"], "other/logs"),
    (["audit", "verify", "--log-dir", "other/logs"], "other/logs"),
    (["backup", "--data-dir", "other"], "other"),
    (["config", "check", "--config", "other/config.toml"], "other/config.toml"),
    (["config", "check", "--env-file", "other/.env"], "other/.env"),
    (["config", "check", "--data-dir", "other"], "other"),
    (["run", "--headless", "--max-bars", "2", "--data-dir", "other"], "other"),
    (["run", "--headless", "--max-bars", "2", "--log-dir", "other/logs"], "other/logs"),
    (["backtest", "other/BTC-USD_1h.csv"], "other/BTC-USD_1h.csv"),
    (["backtest", "--report", "other/r.json", "BTC.csv"], "other/r.json"),
    (["backtest", "--list", "--data-dir", "other"], "other"),
    (["backtest", "--clean", "--keep", "1", "--yes", "--data-dir", "other"], "other"),
    (["init", "other/site"], "other/site"),
    (["data", "download", "BTC/USDT", "--since", "2024-01-01", "--file", "other/x.csv"], "other/x.csv"),
    (["data", "download", "BTC/USDT", "--since", "2024-01-01", "--out", "other"], "other"),
    (["backup", "verify", "other/x.tar.zst"], "other/x.tar.zst"),
    (["restore", "other/x.tar.zst"], "other/x.tar.zst"),
]


@pytest.mark.parametrize("args, path", CLOSED, ids=[" ".join(a) for a, _ in CLOSED])
def test_a_directory_closed_to_this_user_is_one_line_naming_the_path_exit_2(tmp_path, args, path):
    starter_config(tmp_path)
    (tmp_path / "BTC.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    other = tmp_path / "other"
    (other / "logs").mkdir(parents=True)
    other.chmod(0o000)
    try:
        proc = run_closed(tmp_path, *args)
    finally:
        other.chmod(0o700)
    line = one_line(proc)
    assert path in line and "permission denied" in line, line
    assert not (tmp_path / "backtests").exists() and not (tmp_path / "data" / "backtests").exists()


# ---------------------------------------------------------------------------------------------------- too long
TOO_LONG = [
    (["audit", "tail", "--log-dir", LONG], LONG),
    (["audit", "verify", "--log-dir", LONG], LONG),
    (["config", "check", "--config", LONG], LONG),
    (["config", "check", "--env-file", LONG], LONG),
    (["backtest", LONG + ".csv"], LONG + ".csv"),
    (["backtest", "--report", LONG + ".json", "BTC.csv"], LONG + ".json"),
    (["init", LONG], LONG),
    (["data", "download", "BTC/USDT", "--since", "2024-01-01", "--out", LONG], LONG),
    (["data", "download", "BTC/USDT", "--since", "2024-01-01", "--file", LONG + ".csv"], LONG + ".csv"),
    (["backup", "--to", LONG], LONG),
    (["backup", "verify", LONG], LONG),
    (["restore", LONG], LONG),
]


@pytest.mark.parametrize("args, path", TOO_LONG, ids=[" ".join(a).replace(LONG, "LONG") for a, _ in TOO_LONG])
def test_a_file_name_too_long_is_one_line_naming_it_exit_2(account, tmp_path, args, path):
    cwd = copy_of(account, tmp_path)
    (cwd / "BTC.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    line = one_line(run_ffe(cwd, *args))
    assert path in line and "name too long" in line, line.replace(LONG, "LONG")


# ---------------------------------------------------------------------------------------------------- a loop
LOOPED = [
    (["backup", "--to", "loop/x"], "loop/x"),
    (["backup", "--to", "loop/x/sub"], "loop/x/sub"),
    (["backtest", "--report", "loop/x/r.json", "BTC.csv"], "loop/x/r.json"),
    (["backtest", "--report", "loop/x", "BTC.csv"], "loop/x"),
]


@pytest.mark.parametrize("args, path", LOOPED, ids=[" ".join(a) for a, _ in LOOPED])
def test_a_loop_of_symbolic_links_is_one_line_naming_it_exit_2_and_nothing_written(account, tmp_path, args, path):
    cwd = copy_of(account, tmp_path)
    (cwd / "BTC.csv").write_text("".join(sample_head(BTC_CSV, 300)))
    (cwd / "loop").mkdir()
    (cwd / "loop" / "x").symlink_to("y")
    (cwd / "loop" / "y").symlink_to("x")
    line = one_line(run_ffe(cwd, *args))
    assert path in line and "symbolic link" in line, line
    assert not (cwd / "backups").exists() and not (cwd / "data" / "backtests").exists()


@pytest.mark.parametrize("args, env, says", [
    (["doctor", "--data-dir", "a"], {}, "command line: --data-dir: a: cannot be reached: a loop of symbolic links"),
    (["audit", "verify", "--log-dir", "a"], {},
     "command line: --log-dir: a: cannot be reached: a loop of symbolic links"),
    (["config", "check"], {"FFE_STORAGE__PATH": "a/ffe.db"},
     "environment: FFE_STORAGE__PATH: a: cannot be reached: a loop of symbolic links"),
    (["config", "check"], {"FFE_LOGGING__DIR": "a/logs"},
     "environment: FFE_LOGGING__DIR: a: cannot be reached: a loop of symbolic links"),
], ids=["--data-dir", "--log-dir", "storage.path", "logging.dir"])
def test_a_loop_of_symbolic_links_as_the_data_or_log_directory_is_said_as_a_loop(tmp_path, args, env, says):
    """It was said `a is not a directory`, where every other path option says the loop as one."""
    (tmp_path / "config.toml").write_text('mode = "paper"\n')
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    line = one_line(run_ffe(tmp_path, *args, env=ffe_env(**env)))
    assert line == f"ffe: error: {says}", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "config.toml"]  # nothing made


def test_a_loop_of_symbolic_links_given_as_market_data_is_said_as_a_loop_not_as_missing(tmp_path):
    """Path.exists answers False for a loop: it was said as `No such file`."""
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "BTC-USD_1h.csv").symlink_to("BTC-USD_1h.csv")
    for given in ("loop", "BTC-USD_1h.csv", "BTC/USDT=loop"):
        line = one_line(run_ffe(tmp_path, "backtest", given))
        assert line.startswith(f"ffe: error: {given.split('=')[-1]}: ") and "loop of symbolic links" in line, line
        assert "No such file" not in line, line
    assert not (tmp_path / "data" / "backtests").exists()


def test_a_loop_of_symbolic_links_as_a_replay_file_is_said_as_a_loop(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "replay.toml").write_text('[market]\nsource = "replay"\n'
                                          'replay_files = { "BTC/USDT" = "loop", "ETH/USDT" = "loop" }\n')
    proc = run_ffe(tmp_path, "config", "check", "--config", "replay.toml")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "loop of symbolic links" in proc.stderr, proc.stderr
    assert "no such file" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------------- unreadable
READERS = [  # each command, and the file of the records it reads
    (["doctor"], "data/ffe.db"),
    (["report", "trades"], "data/ffe.db"),
    (["audit", "show", "ffe-1"], "data/ffe.db"),
    (["audit", "verify"], "data/ffe.db"),
    (["backup", "--to", "bk"], "data/ffe.db"),
    (["doctor"], "logs/audit.jsonl"),
    (["audit", "verify"], "logs/audit.jsonl"),
    (["backup", "--to", "bk"], "logs/audit.jsonl"),
]


@pytest.mark.parametrize("args, name", READERS, ids=[" ".join(a) + " " + n for a, n in READERS])
def test_a_records_file_this_user_cannot_read_is_said_alike_by_every_reader_exit_2(account, tmp_path, args, name):
    cwd = copy_of(account, tmp_path)
    (cwd / name).chmod(0o000)
    try:
        proc = run_closed(cwd, *args)
    finally:
        (cwd / name).chmod(0o600)
    line = one_line(proc)
    assert name in line and "permission denied" in line, line
    assert not (cwd / "bk").exists() or not any((cwd / "bk").iterdir())


def test_a_backup_of_a_database_it_cannot_read_says_so_not_that_it_cannot_write(account, tmp_path):
    """The data directory takes no write (no lock file can be made there), and the database cannot be read: the
    backup says it cannot read it, not to free space and start again."""
    cwd = copy_of(account, tmp_path)
    (cwd / "data" / "ffe.lock").unlink(missing_ok=True)
    (cwd / "data" / "ffe.db").chmod(0o000)
    (cwd / "data").chmod(0o500)
    try:
        proc = run_closed(cwd, "backup", "--to", "bk")
    finally:
        (cwd / "data").chmod(0o700)
        (cwd / "data" / "ffe.db").chmod(0o600)
    line = one_line(proc)
    assert "ffe.db" in line and "permission denied" in line, line
    assert "cannot write" not in line and "start again" not in line, line


# A file of the database's beside it (the lock, the WAL, SQLite's shared memory) this user cannot open: it was said
# as a write that failed, with the advice to free space on the disk or make the directory writable (exit 1).
BESIDE = ["data/ffe.db", "data/ffe.lock", "data/ffe.db-wal", "data/ffe.db-shm"]


@pytest.mark.parametrize("name", BESIDE)
def test_a_database_file_this_user_cannot_read_stops_the_start_naming_it_exit_2_nothing_written(account, tmp_path,
                                                                                                 name):
    cwd = copy_of(account, tmp_path)
    (cwd / name).touch()
    (cwd / name).chmod(0o000)
    before = {p: p.read_bytes() for p in (cwd / "data" / "ffe.db", cwd / "logs" / "audit.jsonl")}
    try:
        proc = run_closed(cwd, "run", "--headless", "--max-bars", "2")
    finally:
        (cwd / name).chmod(0o600)
    line = one_line(proc)
    assert name in line and "permission denied" in line and "owner and mode" in line, line
    assert "cannot write" not in line and "free space" not in line, line
    assert {p: p.read_bytes() for p in before} == before
