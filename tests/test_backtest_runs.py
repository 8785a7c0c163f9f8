"""`ffe backtest --list` and `--clean` as real subprocesses over real runs: what is listed (date, data, record
level, size, result), what is removed and said, what is never touched (a folder that is not a run, a run being
written now), and bad input as one line with exit 2."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import forked_ffe
from conftest import (BTC_CSV, ETH_CSV, config_for_run, ffe_cmd, ffe_env, ffe_in_process, run_ffe, sample_head,
                      without_permission_overrides)
from ffe_engine import fmt
from ffe_engine.store import in_use

OLD_RUN = "20200101T000000Z-0a0b0c"  # an interrupted run of long ago: a database, no report


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Three runs that kept records (full, trades, full) and one that did not (summary), an old interrupted run, and
    a folder of the operator's that is not a run."""
    cwd = tmp_path_factory.mktemp("runs")
    (cwd / "BTC-USD_1h.csv").write_text("".join(sample_head(BTC_CSV, 400)))
    (cwd / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, 300)))
    for args in (("BTC-USD_1h.csv", "ETH-USD_1h.csv"), ("ETH-USD_1h.csv", "--records", "trades"),
                 ("ETH-USD_1h.csv", "--records", "summary"), ("BTC-USD_1h.csv",)):
        proc = run_ffe(cwd, "backtest", *args)
        assert proc.returncode == 0, proc.stderr
    old = cwd / "data" / "backtests" / OLD_RUN
    old.mkdir()
    sqlite3.connect(old / "ffe.db").execute("CREATE TABLE t (x)").connection.close()
    (cwd / "data" / "backtests" / "notes").mkdir()
    (cwd / "data" / "backtests" / "notes" / "keep.txt").write_text("mine")
    return cwd


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def run_ids(cwd: Path) -> list[str]:
    return sorted(p.name for p in (cwd / "data" / "backtests").iterdir() if p.name != "notes")


def reports(cwd: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (cwd / "data" / "backtests").glob("*/report.json")}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


def test_list_shows_each_run_with_its_date_data_level_size_and_result(runs_dir):
    proc = run_ffe(runs_dir, "backtest", "--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "BEGUN", "(UTC)", "RECORDS"]
    by_id = {line.split()[0]: line for line in lines[1:-1]}
    assert list(by_id) == run_ids(runs_dir)  # oldest first; the summary run left nothing, "notes" is not a run
    found = reports(runs_dir)
    assert sorted(r["records"] for r in found.values()) == ["full", "full", "trades"]
    for run_id, r in found.items():
        line = by_id[run_id]
        begun = f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:{run_id[11:13]}:{run_id[13:15]}Z"
        assert line.split()[1:3] == [begun, r["records"]]
        assert f"{', '.join(r['symbols'])} {r['from'][:10]} -> {r['to'][:10]}, {r['bars']:,} bars" in line
        assert f"return {r['return_pct']:+.2f}%, {r['trades']} trades, max drawdown {r['max_drawdown_pct']:.2f}%" in line
        assert re.search(r"\d (B|KB|MB)\s", line)
    assert "no report: interrupted, or running now" in by_id[OLD_RUN]
    assert lines[-1].startswith("4 runs, ")


def test_clean_keep_removes_the_older_runs_data_and_logs_and_says_which(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    ids = run_ids(cwd)
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "1", "--yes")
    assert proc.returncode == 0, proc.stderr
    removed = ids[:-1]
    assert proc.stdout.startswith(f"removing 3 of 4 runs, ")
    for run_id in removed:
        assert f"data/backtests/{run_id}" in proc.stdout
        assert not (cwd / "data" / "backtests" / run_id).exists() and not (cwd / "logs" / "backtests" / run_id).exists()
    full_run = next(i for i, r in reports(runs_dir).items() if r["records"] == "full" and i in removed)
    assert f"logs/backtests/{full_run}" in proc.stdout  # its audit file's folder goes too
    assert run_ids(cwd) == ids[-1:] and (cwd / "data" / "backtests" / "notes" / "keep.txt").read_text() == "mine"
    assert proc.stdout.rstrip().endswith("removed 3 runs; 1 kept")


def test_clean_older_than_removes_only_runs_begun_before_then(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    proc = run_ffe(cwd, "backtest", "--clean", "--older-than", "30d", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert run_ids(cwd) == [i for i in run_ids(runs_dir) if i != OLD_RUN]
    proc = ffe_in_process(cwd, "backtest", "--clean", "--older-than", "30d", "--keep", "0", "--yes")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to remove: 3 runs"), proc.stdout


def test_clean_without_yes_off_a_terminal_lists_what_it_would_remove_and_removes_nothing(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "2")
    assert one_error_line(proc) == "ffe: error: ffe backtest --clean would remove these runs: add --yes to confirm"
    assert proc.stdout.startswith("would remove 2 of 4 runs")
    assert run_ids(cwd) == run_ids(runs_dir)


def test_clean_on_a_terminal_asks_and_a_no_removes_nothing(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    master, slave = pty.openpty()
    proc = subprocess.Popen(ffe_cmd("backtest", "--clean", "--keep", "0"), cwd=cwd, env=ffe_env(), stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    try:
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 2 and err.strip() == "ffe: error: ffe backtest --clean: not confirmed, nothing removed"
    assert "would remove 4 of 4 runs" in out
    assert run_ids(cwd) == run_ids(runs_dir)


def test_a_run_being_written_now_is_listed_as_running_and_never_removed(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    db = cwd / "data" / "backtests" / OLD_RUN / "ffe.db"
    # Held as a backtest's writer holds its database: an exclusive lock until the run ends.
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("INSERT INTO t VALUES (1)")
        listed = run_ffe(cwd, "backtest", "--list")
        assert re.search(rf"^{OLD_RUN} .* running now$", listed.stdout, re.MULTILINE), listed.stdout
        proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
        assert proc.returncode == 0, proc.stderr
    finally:
        conn.close()
    assert run_ids(cwd) == [OLD_RUN] and "removing 3 of 4 runs" in proc.stdout


@pytest.mark.parametrize("args, says", [
    (("--clean",), "ffe backtest --clean needs --keep N or --older-than AGE (or both)"),
    (("--clean", "--keep", "-1"), "--keep needs a whole number of runs, 0 or more, got '-1'"),
    (("--clean", "--older-than", "5"), "--older-than needs an age such as 30m, 12h, 7d or 2w (a whole number of 1 or "
                                       "more and m, h, d or w), got '5'"),
    (("--clean", "--older-than", "0m"), "--older-than needs an age such as 30m, 12h, 7d or 2w (a whole number of 1 "
                                        "or more and m, h, d or w), got '0m'"),
    (("--list", "--clean"), "ffe backtest takes --list or --clean, not both"),
    (("--list", "x.csv"), "ffe backtest --list takes no files (got x.csv)"),
    (("--list", "--keep", "1"), "ffe backtest --keep goes with --clean, not --list"),
    (("--clean", "--keep", "1", "--report", "r.json"), "ffe backtest --clean takes no --records, --report or --lenient"),
    (("x.csv", "--yes"), "ffe backtest --yes goes with --clean"),
    ((), "ffe backtest needs at least one [SYMBOL=]FILE.csv (or --list, --clean)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    proc = (run_ffe if args == ("--clean",) else ffe_in_process)(tmp_path, "backtest", *args)  # the first: a process
    assert one_error_line(proc) == f"ffe: error: {says} (see `ffe backtest --help`)"


@pytest.mark.parametrize("option, value", [("--keep", "²"), ("--keep", "٣"), ("--keep", "３"), ("--older-than", "٣d")])
def test_a_number_in_other_than_ascii_digits_is_refused_in_one_line_and_removes_nothing(runs_dir, tmp_path, option,
                                                                                          value):
    # A superscript or an Arabic-Indic digit passes str.isdigit (and \d): refused as any other bad number, not
    # taken for the digit it looks like, nor a traceback.
    cwd = copy(runs_dir, tmp_path / "c")
    runner = run_ffe if value == "²" else ffe_in_process  # the first: a process
    proc = runner(cwd, "backtest", "--clean", option, value, "--yes")
    says = ("--keep needs a whole number of runs, 0 or more" if option == "--keep" else
            "--older-than needs an age such as 30m, 12h, 7d or 2w (a whole number of 1 or more and m, h, d or w)")
    assert one_error_line(proc) == f"ffe: error: {says}, got {value!r} (see `ffe backtest --help`)"
    assert proc.stdout == "" and run_ids(cwd) == run_ids(runs_dir)


ODD_RUN = "20210101T000000Z-0d0e0f"  # a run whose report.json is not one ffe wrote


@pytest.mark.parametrize("text, says", [
    ('{"symbols": [1, 2]}', "report unreadable: 'symbols' is not a list of names"),
    ('{"symbols": "BTC/USD"}', "report unreadable: 'symbols' is not a list of names"),
    ('{"bars": "many"}', "report unreadable: 'bars' is not a whole number"),
    ('{"return_pct": [1]}', "report unreadable: 'return_pct' is not a number"),
    ('{"records": {"level": "full"}}', "report unreadable: 'records' is not text"),
    ("[1, 2]", "report unreadable: not a JSON object"),
    ("{", "report unreadable: Expecting property name enclosed in double quotes"),
])
def test_a_run_whose_report_is_not_one_ffe_wrote_is_listed_as_unreadable_and_cleaned_with_the_others(
        runs_dir, tmp_path, text, says):
    cwd = copy(runs_dir, tmp_path / "c")
    odd = cwd / "data" / "backtests" / ODD_RUN
    odd.mkdir()
    (odd / "report.json").write_text(text)
    runner = run_ffe if text == '{"symbols": [1, 2]}' else ffe_in_process  # the first: a process
    proc = runner(cwd, "backtest", "--list")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    by_id = {line.split()[0]: line for line in proc.stdout.splitlines()[1:-1]}
    assert list(by_id) == run_ids(cwd) and ODD_RUN in by_id
    assert says in by_id[ODD_RUN] and "return " in by_id[run_ids(runs_dir)[-1]]
    assert proc.stdout.splitlines()[-1].startswith("5 runs, ")
    proc = runner(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert says in proc.stdout and proc.stdout.rstrip().endswith("removed 5 runs; 0 kept")
    assert run_ids(cwd) == [] and (cwd / "data" / "backtests" / "notes" / "keep.txt").read_text() == "mine"


def test_a_report_s_words_a_terminal_would_act_on_are_listed_as_their_escapes(runs_dir, tmp_path):
    # A report.json edited by hand (or another tool's) is words from outside: an escape sequence in a symbol or a
    # date would clear the screen or move the cursor of whoever lists the runs.
    cwd = copy(runs_dir, tmp_path / "c")
    odd = cwd / "data" / "backtests" / ODD_RUN
    odd.mkdir()
    (odd / "report.json").write_text(json.dumps({"symbols": ["BTC/USD\x1b[2J"], "from": "2020\u202e-01",
                                                 "to": "2021\n", "bars": 3, "records": "full\x07"}))
    proc = ffe_in_process(cwd, "backtest", "--list")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith(ODD_RUN)]
    assert "BTC/USD\\x1b[2J" in line and "2020\\u202e-01" in line and "2021\\n" in line, line
    assert all(c.isprintable() for c in proc.stdout.replace("\n", "")), proc.stdout


def test_a_folder_named_as_a_run_at_a_time_no_calendar_has_is_no_run(runs_dir, tmp_path):
    # Named as ffe names a run (the UTC time it began and six hex digits) but for a day or hour there is not: no
    # ffe began it, so it is the operator's, as any other folder that is not a run.
    cwd = copy(runs_dir, tmp_path / "c")
    odd = ["20240230T000000Z-abcdef", "20240101T250000Z-abcdef"]
    for name in odd:
        for side in ("data", "logs"):
            (cwd / side / "backtests" / name).mkdir(parents=True)
            (cwd / side / "backtests" / name / "keep.txt").write_text("mine")
    proc = run_ffe(cwd, "backtest", "--list")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines()[1:-1]]
    assert listed == run_ids(runs_dir) and proc.stdout.splitlines()[-1].startswith("4 runs, ")
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("removing 4 of 4 runs") and not any(name in proc.stdout for name in odd)
    assert run_ids(cwd) == sorted(odd)
    for name in odd:
        for side in ("data", "logs"):
            assert (cwd / side / "backtests" / name / "keep.txt").read_text() == "mine"


def test_list_of_a_directory_without_runs_says_so(tmp_path):
    proc = ffe_in_process(tmp_path, "backtest", "--list")  # a real process lists: test_list_shows_each_run_...
    assert proc.returncode == 0 and proc.stdout.strip() == "no backtest runs in data/backtests", proc


@pytest.mark.parametrize("level", ["full", "trades"])
def test_a_run_s_records_are_private_whatever_the_umask_and_leave_no_journal(tmp_path, level):
    # As the live records (docs/storage.md): directories 0700, files 0600, under the common umask 022.
    (tmp_path / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, 300)))
    args = ("backtest", "ETH-USD_1h.csv", "--records", level)
    config_for_run(tmp_path, args)
    proc = forked_ffe.run(ffe_cmd(*args), cwd=tmp_path, env=ffe_env(), capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, umask=0o022)
    assert proc.returncode == 0, proc.stderr
    run_id = run_ids(tmp_path)[0]
    made = [top for top in (tmp_path / "data" / "backtests", tmp_path / "logs" / "backtests") if top.exists()]
    for top in made[:]:
        made.extend(top.rglob("*"))
    assert (tmp_path / "data" / "backtests" / run_id / "ffe.db") in made
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made}
    assert modes == {k: ("0o700" if (tmp_path / k).is_dir() else "0o600") for k in modes}, modes
    assert not any(p.name.endswith("-journal") for p in made), modes


def run_of(cwd: Path, level: str) -> tuple[str, str]:
    run_id = next(run for run, report in sorted(reports(cwd).items()) if report["records"] == level)
    return f"data/backtests/{run_id}", f"logs/backtests/{run_id}"


@pytest.mark.parametrize("level", ["full", "trades"])
def test_doctor_checks_a_run_as_what_it_is_and_passes_a_healthy_one(runs_dir, level):
    # A full run's trail is compressed and its events rows compact; a trades run keeps no events by design.
    data, logs = run_of(runs_dir, level)
    proc = run_ffe(runs_dir, "doctor", "--data-dir", data, "--log-dir", logs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ") and proc.stderr == "", (proc.stdout, proc.stderr)
    assert ("audit chain" in proc.stdout) == (level == "full"), proc.stdout
    # Checked against the cash it ran with, whatever the configuration says now.
    other = run_ffe(runs_dir, "doctor", "--data-dir", data, "--log-dir", logs,
                    env=ffe_env(FFE_VENUE__STARTING_CASH="123456"))
    assert other.returncode == 0, other.stdout + other.stderr


@pytest.mark.parametrize("level", ["full", "trades"])
def test_doctor_knows_a_run_moved_out_of_its_folder_by_its_records_not_its_folder_name(runs_dir, tmp_path, level):
    """A run archived elsewhere, under another name: its records say what level they are, and the doctor checks
    them as such (a full run's compact events against its compressed trail; a trades run with none)."""
    data, logs = run_of(runs_dir, level)
    shutil.copytree(runs_dir / data, tmp_path / "archive" / "my run")
    if (runs_dir / logs).exists():  # a trades run keeps no trail
        shutil.copytree(runs_dir / logs, tmp_path / "archive" / "my run logs")
    proc = run_ffe(tmp_path, "doctor", "--data-dir", "archive/my run", "--log-dir", "archive/my run logs")
    assert proc.returncode == 0, proc.stderr
    assert f"a backtest run, records {level}" in proc.stdout, proc.stdout


@pytest.mark.parametrize("logs", [None, "empty"])
def test_doctor_of_a_full_run_without_its_own_log_folder_names_that_folder_rather_than_damage(runs_dir, tmp_path, logs):
    """A full run's audit file is in its own log folder: read with a log directory that holds no trail (none given
    where ./logs is not, or an empty one), the doctor says where the run's file is, exit 2, as `ffe audit verify`
    refuses it; not that the run's records are damaged."""
    data, _ = run_of(runs_dir, "full")
    run_id = Path(data).name
    args = ["doctor", "--data-dir", str(runs_dir / data)]
    if logs is not None:
        (tmp_path / logs).mkdir()
        args += ["--log-dir", logs]
    proc = run_ffe(tmp_path, *args)
    line = one_error_line(proc)
    assert proc.stdout == "" and "--log-dir" in line and f"logs/backtests/{run_id}/audit.jsonl.zst" in line, line
    assert "not in the audit trail" not in line, line
    verify = run_ffe(tmp_path, *(["audit", "verify"] + args[1:]))
    assert verify.returncode == 2, verify.stdout + verify.stderr


def test_a_trades_run_which_keeps_no_trail_is_read_without_a_log_folder_beside_an_account_s_logs(runs_dir):
    """A trades run keeps no audit trail: read from the account's directory (logs/backtests there), the doctor and
    the audit commands are not told to add a log folder it never had."""
    data, _ = run_of(runs_dir, "trades")
    assert (runs_dir / "logs" / "backtests").is_dir() and not (runs_dir / "logs" / "backtests" / Path(data).name).exists()
    doctor = run_ffe(runs_dir, "doctor", "--data-dir", data)
    assert doctor.returncode == 0 and "records trades" in doctor.stdout, doctor.stdout + doctor.stderr
    for command in (("audit", "verify"), ("audit", "tail")):
        proc = run_ffe(runs_dir, *command, "--data-dir", data)
        assert "--log-dir" not in proc.stdout + proc.stderr, (command, proc.stdout, proc.stderr)


def test_a_trades_run_read_beside_an_account_s_trail_is_not_checked_against_it(runs_dir, tmp_path):
    """The account's own audit trail in ./logs: the trades run (which keeps none) is not read against it, which
    would say its database lost committed records and advise a restore."""
    cwd = copy(runs_dir, tmp_path / "runs")
    data, _ = run_of(cwd, "trades")
    (cwd / "logs" / "audit.jsonl").write_text(
        '{"ts": 1.0, "seq": 1, "event": "run", "phase": "start", "mode": "PAPER", "detail": {}}\n')
    for command in (("audit", "verify"), ("audit", "tail")):
        proc = run_ffe(cwd, *command, "--data-dir", data)
        assert proc.returncode == 2 and "such runs keep no audit trail" in proc.stderr, (command, proc.stderr)


def test_doctor_and_verify_of_a_run_given_another_run_s_log_folder_name_the_right_one_rather_than_damage(runs_dir):
    full = sorted(run for run, report in reports(runs_dir).items() if report["records"] == "full")
    assert len(full) == 2
    data, other = f"data/backtests/{full[0]}", f"logs/backtests/{full[1]}"
    for command in (("doctor",), ("audit", "verify")):
        proc = run_ffe(runs_dir, *command, "--data-dir", data, "--log-dir", other)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        line = one_error_line(proc)
        assert f"add --log-dir logs/backtests/{full[0]}" in line and "edited" not in line, line
    proc = run_ffe(runs_dir, "backup", "--data-dir", data, "--log-dir", other)  # its advice names its own folders
    assert proc.returncode == 2 and f"({data} and logs/backtests/{full[0]})" in one_error_line(proc), proc.stderr


def test_doctor_still_finds_a_run_s_damage(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "runs")
    data, logs = run_of(cwd, "full")
    with sqlite3.connect(cwd / data / "ffe.db") as conn:
        assert conn.execute("DELETE FROM fills WHERE id = (SELECT MIN(id) FROM fills)").rowcount == 1
    conn.close()
    proc = run_ffe(cwd, "doctor", "--data-dir", data, "--log-dir", logs)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "has no fill" in proc.stderr, proc.stderr


@pytest.mark.parametrize("edit", ["UPDATE trades SET pnl = pnl + 100 WHERE id = 1",
                                  "UPDATE trades SET exit_price = exit_price * 1.01 WHERE id = 1",
                                  "UPDATE trades SET symbol = 'BTC/USD' WHERE id = 1",
                                  "DELETE FROM trades WHERE id = 1",
                                  "INSERT INTO trades (symbol, side, quantity, entry_price, exit_price, pnl, fees, "
                                  "reason, opened_ts, closed_ts, entry_decision_id, exit_client_order_id) SELECT "
                                  "symbol, side, quantity, entry_price, exit_price, pnl, fees, reason, opened_ts, "
                                  "closed_ts, entry_decision_id, exit_client_order_id FROM trades WHERE id = 1",
                                  "UPDATE trades SET quantity = quantity * 2, pnl = (exit_price - entry_price) * "
                                  "quantity * 2 - fees WHERE id = 1",
                                  "UPDATE trades SET side = 'sell' WHERE id = 1"])
def test_doctor_finds_a_trades_run_s_closed_trade_edited(runs_dir, tmp_path, edit):
    """A trades run keeps no position_closed events to hold its closed trades against; its trades are checked
    against their own figures and their exit's fills: a P&L or an exit price edited is found, as in a full run."""
    cwd = copy(runs_dir, tmp_path / "runs")
    data, logs = run_of(cwd, "trades")
    with sqlite3.connect(cwd / data / "ffe.db") as conn:
        assert conn.execute(edit).rowcount == 1
    conn.close()
    proc = run_ffe(cwd, "doctor", "--data-dir", data, "--log-dir", logs)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    [line] = proc.stderr.strip().splitlines()
    assert "closed trade 1 " in line or "exit order " in line, line


def test_a_run_cut_short_with_records_in_its_trail_the_database_lacks_is_said_as_a_run_cut_short(runs_dir, tmp_path):
    """Its writer ended between writing a flush's records to the audit file and committing them (the out-of-memory
    killer): the database's last transaction is rolled back, chain head included. A run has no next start to set the
    records aside: doctor and verify say it was cut short."""
    import zstandard

    from ffe_engine.chain import line_hash

    cwd = copy(runs_dir, tmp_path / "c")
    data, logs = run_of(cwd, "full")
    with open(cwd / logs / "audit.jsonl.zst", "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read().split(b"\n")[:-1]
    kept = lines[-5]
    seq = json.loads(kept)["seq"]
    with sqlite3.connect(cwd / data / "ffe.db") as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (seq,))
        conn.execute("UPDATE kv SET value = ? WHERE key = 'audit_head'",
                     (json.dumps({"seq": seq, "hash": line_hash(kept)}),))
    conn.close()
    said = (f"note: 4 records after the database's last event (seq {seq}) are not in it: the run was cut short there "
            "(its writer ended before the commit, or is still writing); a run is not started again: run the backtest "
            "again for its whole records")
    for args in (("doctor",), ("audit", "verify")):
        proc = run_ffe(cwd, *args, "--data-dir", data, "--log-dir", logs)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert said in proc.stdout.splitlines() and "next start" not in proc.stdout, (args, proc.stdout)


def test_audit_tail_prints_a_finished_run_s_last_records_and_says_it_cannot_follow_one(runs_dir):
    data, logs = run_of(runs_dir, "full")
    proc = run_ffe(runs_dir, "audit", "tail", "-n", "5", "--json", "--data-dir", data, "--log-dir", logs)
    assert proc.returncode == 0, proc.stderr
    seqs = [json.loads(line)["seq"] for line in proc.stdout.splitlines()]
    last = sqlite3.connect(runs_dir / data / "ffe.db").execute("SELECT MAX(seq) FROM events").fetchone()[0]
    assert seqs == list(range(last - 4, last + 1)), seqs
    human = run_ffe(runs_dir, "audit", "tail", "-n", "3", "--event", "run", "--data-dir", data, "--log-dir", logs)
    assert human.returncode == 0 and len(human.stdout.splitlines()) == 2, (human.stdout, human.stderr)
    follow = run_ffe(runs_dir, "audit", "tail", "-f", "--data-dir", data, "--log-dir", logs, timeout=20)
    assert one_error_line(follow).startswith("ffe: error: ") and "-f" in follow.stderr, follow.stderr
    assert "audit.jsonl.zst" in follow.stderr, follow.stderr


# ---------------------------------------------------------------------------------------------------- whose runs
def test_a_data_directory_s_runs_are_its_own_not_the_log_folders_of_another_s(runs_dir, tmp_path):
    """Data directories that share a log directory (a sweep's `--data-dir X` beside the default): each lists and
    cleans only the runs it has a folder of; a log folder without one here is another's, left alone."""
    cwd = copy(runs_dir, tmp_path / "c")
    trails = sorted(p.name for p in (cwd / "logs" / "backtests").iterdir())
    assert len(trails) == 2
    listed = run_ffe(cwd, "backtest", "--list", "--data-dir", "other", "--log-dir", "logs")
    assert listed.returncode == 0 and listed.stdout.strip() == "no backtest runs in other/backtests", listed
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes", "--data-dir", "other", "--log-dir", "logs")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to remove: 0 runs"), (proc.stdout, proc.stderr)
    assert sorted(p.name for p in (cwd / "logs" / "backtests").iterdir()) == trails
    # A trail whose run has no folder in this data directory is not one of its runs either.
    shutil.rmtree(cwd / "data" / "backtests" / trails[0])
    listed = run_ffe(cwd, "backtest", "--list")
    assert trails[0] not in listed.stdout and listed.stdout.splitlines()[-1].startswith("3 runs"), listed.stdout
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 0 and "removing 3 of 3 runs" in proc.stdout, (proc.stdout, proc.stderr)
    assert [p.name for p in (cwd / "logs" / "backtests").iterdir()] == [trails[0]]


def wait_for_writing(data_dir: Path, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The id of the run being written under data_dir, once its writer holds its database."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = sorted((data_dir / "backtests").glob("*/ffe.db")) if (data_dir / "backtests").is_dir() else []
        if found and in_use(found[0]):
            return found[0].parent.name
        time.sleep(0.05)
    raise AssertionError(f"no run being written under {data_dir} (exit {proc.poll()})")


def test_a_run_being_written_is_never_removed_by_the_clean_of_any_data_directory(tmp_path):
    """A full run on the sample files, and meanwhile the cleans of another data directory sharing its log directory
    and of a copy of its own (a backup taken now, whose copied database nobody holds): its trail stays, the run
    ends well and its trail verifies."""
    args = ("backtest", str(BTC_CSV), str(ETH_CSV), "--data-dir", "A", "--log-dir", "L")
    proc = forked_ffe.Popen(ffe_cmd(*args), cwd=tmp_path, env=ffe_env(FFE_BACKTEST__CACHE_MB="0"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = wait_for_writing(tmp_path / "A", proc)
        other = run_ffe(tmp_path, "backtest", "--clean", "--keep", "0", "--yes", "--data-dir", "B", "--log-dir", "L")
        assert other.returncode == 0 and other.stdout.startswith("nothing to remove: 0 runs"), other
        listed = run_ffe(tmp_path, "backtest", "--list", "--data-dir", "B", "--log-dir", "L")
        assert listed.stdout.strip() == "no backtest runs in B/backtests", listed
        shutil.copytree(tmp_path / "A", tmp_path / "C")
        listed = run_ffe(tmp_path, "backtest", "--list", "--data-dir", "C", "--log-dir", "L")
        assert re.search(rf"^{run} .* running now$", listed.stdout, re.MULTILINE), listed.stdout
        copied = run_ffe(tmp_path, "backtest", "--clean", "--keep", "0", "--yes", "--data-dir", "C", "--log-dir", "L")
        assert copied.returncode == 0 and copied.stdout.startswith("nothing to remove: 1 run"), copied
        assert (tmp_path / "L" / "backtests" / run / "audit.jsonl.zst").is_file()
        assert proc.poll() is None  # all of it while the run was being written
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"L/backtests/{run}/audit.jsonl.zst" in out
    verify = run_ffe(tmp_path, "audit", "verify", "--data-dir", f"A/backtests/{run}", "--log-dir", f"L/backtests/{run}")
    assert verify.returncode == 0, (verify.stdout, verify.stderr)


# ---------------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("side", ["data", "logs"])
def test_a_run_whose_folder_cannot_be_made_is_one_line_and_leaves_nothing(tmp_path, side):
    (tmp_path / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, 300)))
    (tmp_path / side).mkdir()
    (tmp_path / side / "backtests").write_text("not a directory")  # as a read-only or full disk would refuse it
    proc = run_ffe(tmp_path, "backtest", "ETH-USD_1h.csv")
    said = [line for line in proc.stderr.splitlines() if not line.startswith("20")]  # the engine's log lines
    assert proc.returncode == 1 and len(said) == 1, proc.stderr
    assert said[0].startswith(f"ffe: error: {side}/backtests/") and "cannot write (Not a directory)" in said[0], said
    assert "a part of its path is a file, not a directory: move it away" in said[0] and "free space" not in said[0]
    if side == "logs":
        assert [p.name for p in (tmp_path / "data" / "backtests").iterdir()] == []
    listed = run_ffe(tmp_path, "backtest", "--list")
    assert listed.stdout.strip() == "no backtest runs in data/backtests", listed


def move_away(cwd: Path, run_id: str, disk: Path, name: str | None = None) -> list[Path]:
    """A run's folders moved to another disk and linked back where they were; the places they were moved to."""
    moved = []
    for top in ("data", "logs"):
        folder = cwd / top / "backtests" / run_id
        if folder.exists():
            target = disk / top / (name or run_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(folder, target)
            folder.symlink_to(target)
            moved.append(target)
    return moved


def test_clean_removes_a_run_moved_to_another_disk_and_linked_back_with_where_it_went(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    full = sorted(i for i, r in reports(cwd).items() if r["records"] == "full")[0]
    moved = move_away(cwd, full, tmp_path / "disk2")
    assert len(moved) == 2
    listed = run_ffe(cwd, "backtest", "--list")
    assert re.search(rf"^{full} .* full .*; return ", listed.stdout, re.MULTILINE), listed.stdout
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("removed 4 runs; 0 kept"), (proc.stdout, proc.stderr)
    assert f"data/backtests/{full} -> {moved[0]}" in proc.stdout
    assert not any(p.exists() or p.is_symlink() for p in moved + [cwd / "data" / "backtests" / full,
                                                                  cwd / "logs" / "backtests" / full])


def test_clean_leaves_a_run_linked_to_a_folder_of_another_name_and_says_so_in_one_line(runs_dir, tmp_path):
    """A link to a folder that is not named as the run may be to anything (a whole disk): not followed to remove
    what it points to. The other runs are removed; the exit is 1, as not all that was asked was done."""
    cwd = copy(runs_dir, tmp_path / "c")
    moved = move_away(cwd, OLD_RUN, tmp_path / "disk2", name="elsewhere")
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ffe: error: {OLD_RUN} not removed: data/backtests/{OLD_RUN} is a "
                                                   f"link to {moved[0]}"), proc.stderr
    assert proc.stdout.rstrip().endswith("removed 3 runs; 1 not removed; 0 kept"), proc.stdout
    assert run_ids(cwd) == [OLD_RUN] and (moved[0] / "ffe.db").is_file()


# ---------------------------------------------------------------------------------------------------- interrupted
def test_list_shows_the_record_level_of_an_interrupted_run_from_its_database(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    levels = {i: r["records"] for i, r in reports(cwd).items()}
    for run_id in levels:
        (cwd / "data" / "backtests" / run_id / "report.json").unlink()  # as a run cut short leaves it
    listed = run_ffe(cwd, "backtest", "--list")
    for run_id, level in levels.items():
        assert re.search(rf"^{run_id} +\S+ +{level} .* no report: interrupted", listed.stdout, re.MULTILINE), \
            listed.stdout
    assert re.search(rf"^{OLD_RUN} +\S+ +- ", listed.stdout, re.MULTILINE), listed.stdout  # its database says none


# ---------------------------------------------------------------------------------------------------- layouts
def real_folders(*folders: Path) -> set[Path]:
    return {Path(os.path.realpath(f)) for f in folders if f.is_dir()}


def files_size(folders: set[Path]) -> int:
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file())


@pytest.mark.parametrize("layout", ["same", "logs inside data", "data inside logs", "logs a link to data",
                                    "data a link to logs"])
def test_a_run_is_listed_and_cleaned_as_the_folders_it_has_on_disk_whatever_the_layout(tmp_path, layout):
    """The data and log directories one directory (by name or by a link) give a run one folder: listed at its size,
    printed once and removed, never refused as held by the clean's own hold of it."""
    (tmp_path / "ETH-USD_1h.csv").write_text("".join(sample_head(ETH_CSV, 300)))
    data, logs = {"same": ("W", "W"), "logs inside data": ("D", "D/logs"), "data inside logs": ("L/data", "L"),
                  "logs a link to data": ("D", "L"), "data a link to logs": ("D", "L")}[layout]
    if layout == "logs a link to data":
        (tmp_path / "D").mkdir()
        (tmp_path / "L").symlink_to(tmp_path / "D")
    elif layout == "data a link to logs":
        (tmp_path / "L").mkdir()
        (tmp_path / "D").symlink_to(tmp_path / "L")
    dirs = ("--data-dir", data, "--log-dir", logs)
    proc = run_ffe(tmp_path, "backtest", "ETH-USD_1h.csv", *dirs)
    assert proc.returncode == 0, proc.stderr
    run = [p.name for p in (tmp_path / data / "backtests").iterdir()][0]
    folders = real_folders(tmp_path / data / "backtests" / run, tmp_path / logs / "backtests" / run)
    assert len(folders) == (1 if layout in ("same", "logs a link to data", "data a link to logs") else 2)
    listed = run_ffe(tmp_path, "backtest", "--list", *dirs)
    assert re.search(rf"^{run} +\S+ +full +{re.escape(fmt.size(files_size(folders)))}  .*; return ", listed.stdout,
                     re.MULTILINE), listed.stdout
    proc = run_ffe(tmp_path, "backtest", "--clean", "--keep", "0", "--yes", *dirs)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("removed 1 run; 0 kept"), (proc.stdout, proc.stderr)
    assert len([line for line in proc.stdout.splitlines() if line.startswith("    ")]) == len(folders), proc.stdout
    assert not any(f.exists() for f in folders)
    assert run_ffe(tmp_path, "backtest", "--list", *dirs).stdout.startswith("no backtest runs in "), listed


# ---------------------------------------------------------------------------------------------------- cut short
def run_as_a_user(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`ffe ARGS` bound by the permissions of files as any user is. As root, it starts without the capabilities
    that pass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER, dropped from its bounding set before it
    starts): a directory made read-only refuses it for real, as it would anyone."""
    return forked_ffe.run(ffe_cmd(*args), cwd=cwd, env=ffe_env(), capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, preexec_fn=without_permission_overrides)


@pytest.mark.parametrize("side", ["logs", "data"])
def test_a_clean_stopped_by_a_file_it_cannot_remove_leaves_the_run_listed_and_cleanable(runs_dir, tmp_path, side):
    """A file of the run that cannot be removed (in a read-only directory) stops its removal: said with its path,
    the run stays listed with its report, and a clean once it can be removed removes the rest of it."""
    cwd = copy(runs_dir, tmp_path / "c")
    run = sorted(i for i, r in reports(cwd).items() if r["records"] == "full")[0]
    if side == "logs":
        stuck = cwd / "logs" / "backtests" / run
        name = "audit.jsonl.zst"
    else:
        stuck = cwd / "data" / "backtests" / run / "notes"  # the operator's, left there
        stuck.mkdir()
        (stuck / "notes.txt").write_text("mine")
        name = "notes/notes.txt"
    stuck.chmod(0o500)
    try:
        proc = run_as_a_user(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    finally:
        stuck.chmod(0o700)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines == [f"ffe: error: {run} not removed: cannot remove "
                                              f"{side}/backtests/{run}/{name} (Permission denied)"], proc.stderr
    assert proc.stdout.rstrip().endswith("removed 3 runs; 1 not removed; 0 kept"), proc.stdout
    assert (cwd / "data" / "backtests" / run / "report.json").is_file()
    listed = run_ffe(cwd, "backtest", "--list")
    assert re.search(rf"^{run} +\S+ +full .*; return ", listed.stdout, re.MULTILINE), listed.stdout
    assert listed.stdout.splitlines()[-1].startswith("1 run, "), listed.stdout
    proc = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("removed 1 run; 0 kept"), (proc.stdout, proc.stderr)
    assert not (cwd / "data" / "backtests" / run).exists() and not (cwd / "logs" / "backtests" / run).exists()


def test_a_clean_that_cannot_remove_a_run_s_folder_from_its_directory_removes_nothing_of_the_run(runs_dir, tmp_path):
    """The run folders themselves writable, the directory they are in not: nothing of any run is removed (not its
    audit trail, not its report), each said in the one line, and the list is as it was."""
    cwd = copy(runs_dir, tmp_path / "c")
    before = run_ffe(cwd, "backtest", "--list").stdout
    top = cwd / "data" / "backtests"
    top.chmod(0o500)
    try:
        proc = run_as_a_user(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    finally:
        top.chmod(0o700)
    assert proc.returncode == 1 and proc.stdout.rstrip().endswith("removed 0 runs; 4 not removed; 0 kept"), proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for run in run_ids(cwd):
        assert f"{run} not removed: cannot remove data/backtests/{run} (data/backtests is not writable)" in lines[0]
    assert run_ffe(cwd, "backtest", "--list").stdout == before
    assert len(list((cwd / "logs" / "backtests").iterdir())) == 2


def open_descriptors() -> dict[str, str]:
    """This process's descriptors and what each is open on (the one that lists them gone by the time it is read)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
    return found


@pytest.mark.parametrize("linked", [False, True])
def test_a_run_s_data_and_log_folder_that_are_one_folder_are_made_and_held_once(tmp_path, linked):
    from ffe_engine.backtest_runs import HeldFolders, is_held

    run = "20260101T000000Z-0a0b0c"
    (tmp_path / "W").mkdir()
    if linked:
        (tmp_path / "L").symlink_to(tmp_path / "W")
    folder = tmp_path / "W" / "backtests" / run
    before = open_descriptors()
    held = HeldFolders()
    try:
        held.make([folder, tmp_path / ("L" if linked else "W") / "backtests" / run])
        opened = [path for fd, path in open_descriptors().items() if before.get(fd) != path]
        assert opened == [str(folder)] and is_held(folder), opened  # one descriptor, on the folder that is there
    finally:
        held.release()
    assert not is_held(folder) and os.listdir(folder.parent) == [run]


@pytest.mark.parametrize("level", ["full", "trades"])
def test_a_backtest_into_a_run_s_folder_is_refused_and_writes_nothing_there(runs_dir, tmp_path, level):
    """`--data-dir data/backtests/RUN` (a run's folder where the account's was meant): a backtest would put a run and
    a cache inside that run, which its size on `--list` and a `--clean` of it would then take along. Refused, exit
    2, naming the folder, as `ffe run` and `ffe backup` refuse it; nothing is written there."""
    cwd = copy(runs_dir, tmp_path / "runs")
    data, _logs = run_of(cwd, level)
    before = sorted(p.relative_to(cwd) for p in (cwd / data).rglob("*"))
    proc = run_ffe(cwd, "backtest", "ETH-USD_1h.csv", "--data-dir", data)
    line = one_error_line(proc)
    assert f"{data}: a backtest run's records ({level}), not an account's" in line, line
    assert sorted(p.relative_to(cwd) for p in (cwd / data).rglob("*")) == before


def test_a_backtest_into_the_runs_folder_is_refused_and_writes_nothing_there(runs_dir, tmp_path):
    """`--data-dir data/backtests` (the folder of an account's runs, where the account's was meant): a backtest would
    put its run in data/backtests/backtests/RUN, which `--list` and `--clean` of the account never see. Refused, exit
    2, naming the folder and the account's; nothing is written there. `ffe run` refuses it too: it is no account."""
    cwd = copy(runs_dir, tmp_path / "runs")
    before = sorted(p.relative_to(cwd) for p in (cwd / "data").rglob("*"))
    proc = run_ffe(cwd, "backtest", "ETH-USD_1h.csv", "--data-dir", "data/backtests")
    line = one_error_line(proc)
    assert "data/backtests: the folder of an account's backtest runs, not an account's data directory" in line, line
    assert "--data-dir data" in line, line
    proc = run_ffe(cwd, "run", "--data-dir", "data/backtests", "--max-bars", "1")
    line = one_error_line(proc)
    assert "data/backtests: the folder of an account's backtest runs" in line, line
    assert sorted(p.relative_to(cwd) for p in (cwd / "data").rglob("*")) == before


def test_the_runs_folder_is_refused_through_a_link_and_emptied_but_an_account_named_backtests_is_not(runs_dir,
                                                                                                     tmp_path):
    """The folder of the runs reached through a symbolic link, or emptied by `--clean` (beside the account's cache),
    is still no account's data directory: refused. A data directory named `backtests` that holds an account of its
    own (its database) is an account: taken, whatever is beside it."""
    cwd = copy(runs_dir, tmp_path / "runs")
    (cwd / "runslink").symlink_to(cwd / "data" / "backtests")
    line = one_error_line(run_ffe(cwd, "backtest", "ETH-USD_1h.csv", "--data-dir", "runslink"))
    assert "runslink: the folder of an account's backtest runs" in line, line
    assert "--data-dir data/backtests/backtests" not in line
    cleaned = run_ffe(cwd, "backtest", "--clean", "--keep", "0", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    for name in os.listdir(cwd / "data" / "backtests"):  # the operator's folder of notes too
        shutil.rmtree(cwd / "data" / "backtests" / name)
    (cwd / "data" / "ffe.db").unlink(missing_ok=True)  # an account that only ran backtests: its cache beside
    assert (cwd / "data" / "cache").is_dir()
    line = one_error_line(run_ffe(cwd, "backtest", "ETH-USD_1h.csv", "--data-dir", "data/backtests"))
    assert "data/backtests: the folder of an account's backtest runs" in line, line

    other = tmp_path / "other"
    (other / "backtests").mkdir(parents=True)
    first = run_ffe(other, "run", "--headless", "--max-bars", "2", "--data-dir", "backtests", "--log-dir", "logsB")
    assert first.returncode == 0, first.stderr[-2000:]
    beside = run_ffe(other, "run", "--headless", "--max-bars", "2", "--data-dir", ".", "--log-dir", "logsA")
    assert beside.returncode == 0, beside.stderr[-2000:]
    again = run_ffe(other, "run", "--headless", "--max-bars", "2", "--data-dir", "backtests", "--log-dir", "logsB")
    assert again.returncode == 0, again.stderr[-2000:]


def test_config_check_refuses_a_run_s_folder_and_the_runs_folder_as_ffe_run_does(runs_dir, tmp_path):
    """`ffe config check --data-dir` naming a run's folder or the folder of the runs: refused with the line `ffe run`
    says (exit 2), not passed with the run's saved state said to take precedence at the next start, which never
    comes there."""
    cwd = copy(runs_dir, tmp_path / "runs")
    data, _logs = run_of(cwd, "full")
    for folder in (data, "data/backtests"):
        started = one_error_line(run_ffe(cwd, "run", "--headless", "--max-bars", "1", "--data-dir", folder))
        checked = one_error_line(run_ffe(cwd, "config", "check", "--data-dir", folder))
        assert checked == started, (checked, started)
        assert "an engine runs on an account's data directory" in checked, checked


@pytest.mark.parametrize("option", [("--list",), ("--clean", "--keep", "0", "--yes")], ids=["list", "clean"])
def test_list_and_clean_refuse_a_run_s_folder_and_the_runs_folder_as_the_data_directory(runs_dir, tmp_path, option):
    """`ffe backtest --list` or `--clean` with `--data-dir` naming a run's folder or the folder of the runs: refused as
    a backtest refuses them (exit 2, naming the folder), not answered "no backtest runs"; nothing is removed."""
    cwd = copy(runs_dir, tmp_path / "runs")
    data, _logs = run_of(cwd, "trades")
    before = sorted(p.relative_to(cwd) for p in (cwd / "data").rglob("*"))
    line = one_error_line(run_ffe(cwd, "backtest", *option, "--data-dir", data))
    assert f"{data}: a backtest run's records (trades), not an account's" in line, line
    line = one_error_line(run_ffe(cwd, "backtest", *option, "--data-dir", "data/backtests"))
    assert "data/backtests: the folder of an account's backtest runs, not an account's data directory" in line, line
    assert sorted(p.relative_to(cwd) for p in (cwd / "data").rglob("*")) == before


def test_keep_takes_a_sign_as_the_other_whole_numbers_do(runs_dir, tmp_path):
    cwd = copy(runs_dir, tmp_path / "c")
    proc = ffe_in_process(cwd, "backtest", "--clean", "--keep", "+99", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert run_ids(cwd) == run_ids(runs_dir)  # fewer than 99 runs: none removed
